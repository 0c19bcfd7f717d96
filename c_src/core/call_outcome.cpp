// outcome_from: a classified transport result, read as the call's outcome.
#include "call_outcome.hpp"

#include "pool_errors.hpp"

namespace snakepit::core {

Outcome outcome_from(TransportResult&& result, const CallFacts& call) {
  using Kind = TransportResult::Kind;
  switch (result.kind) {
    case Kind::ok: {
      Outcome outcome;
      outcome.ok = true;
      outcome.payload = std::move(result.payload);
      outcome.payload_binary = result.payload_binary;
      return outcome;
    }
    case Kind::tool_error:
      return errors::failure(errors::python_error(std::move(result.error_type), std::move(result.message),
                                                  std::move(result.traceback)));
    case Kind::deadline_exceeded:
      return errors::failure(errors::worker_timeout(call.tool, call.timeout));
    case Kind::cancelled:
      return errors::failure(errors::cancelled());
    case Kind::unavailable:
      return errors::failure(errors::worker_unavailable(call.worker_id, result.message, result.status_code));
    case Kind::failed:
      break;
  }
  return errors::failure(errors::transport_failed(std::move(result.message), result.status_code));
}

}  // namespace snakepit::core
