// How a call's end becomes its outcome: the transport's classification of
// gRPC statuses and the worker's error object, then core's outcome_from.
#include <doctest/doctest.h>

#include <string>

#include "../core/call_outcome.hpp"
#include "../transport/call_result.hpp"

using namespace snakepit;
using core::ErrorCategory;
using Kind = core::TransportResult::Kind;
using grpc::StatusCode;

namespace {
const std::string kTool = "slow_tool";
const std::string kWorker = "pool_worker_1_1";

core::Outcome outcome(core::TransportResult result) {
  return core::outcome_from(std::move(result), core::CallFacts{kTool, core::Millis(1234), kWorker});
}
}  // namespace

TEST_CASE("classify: status codes become kinds, with the code kept") {
  CHECK(transport::classify_status(StatusCode::OK, {}).kind == Kind::ok);
  auto deadline = transport::classify_status(StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded");
  CHECK(deadline.kind == Kind::deadline_exceeded);
  CHECK(deadline.status_code == 4);
  CHECK(transport::classify_status(StatusCode::CANCELLED, "Cancelled").kind == Kind::cancelled);
  auto unavailable = transport::classify_status(StatusCode::UNAVAILABLE, "connection refused");
  CHECK(unavailable.kind == Kind::unavailable);
  CHECK(unavailable.status_code == 14);
  CHECK(unavailable.message == "connection refused");
  auto internal = transport::classify_status(StatusCode::INTERNAL, "internal");
  CHECK(internal.kind == Kind::failed);
  CHECK(internal.status_code == 13);
}

TEST_CASE("classify: a stream's UNKNOWN carrying the Python error object is the tool's error") {
  auto raised = transport::classify_status(
      StatusCode::UNKNOWN, R"({"type":"ValueError","message":"bad value","traceback":"Traceback: line 1"})");
  CHECK(raised.kind == Kind::tool_error);
  CHECK(raised.error_type == "ValueError");
  CHECK(raised.message == "bad value");
  CHECK(raised.traceback == "Traceback: line 1");
  // UNKNOWN with plain text is a transport failure.
  auto plain = transport::classify_status(StatusCode::UNKNOWN, "Exception calling application");
  CHECK(plain.kind == Kind::failed);
  CHECK(plain.status_code == 2);
  // Another code with a JSON-looking message is not a tool error.
  CHECK(transport::classify_status(StatusCode::INTERNAL, "{}").kind == Kind::failed);
}

TEST_CASE("classify: a unary response is the result or the tool's error object") {
  auto ok = transport::classify_response(true, std::string("\x00\xff", 2), true, {});
  CHECK(ok.kind == Kind::ok);
  CHECK(ok.payload_binary);
  CHECK(ok.payload == std::string("\x00\xff", 2));
  auto raised = transport::classify_response(false, {}, false, R"({"type":"KeyError","message":"k"})");
  CHECK(raised.kind == Kind::tool_error);
  CHECK(raised.error_type == "KeyError");
  CHECK(raised.message == "k");
  // An error text that is not an object is kept whole as the message.
  auto text = transport::classify_response(false, {}, false, "it broke");
  CHECK(text.kind == Kind::tool_error);
  CHECK(text.message == "it broke");
  CHECK(text.error_type.empty());
}

TEST_CASE("outcome_from: each kind becomes its outcome") {
  auto ok = outcome(core::TransportResult::success("{\"answer\":42}"));
  CHECK(ok.ok);
  CHECK(ok.payload == "{\"answer\":42}");

  auto raised = outcome(core::TransportResult::tool_error("ValueError", "bad value", "TB"));
  CHECK_FALSE(raised.ok);
  CHECK(raised.error.category == ErrorCategory::python_error);
  CHECK(raised.error.reason == "python_error");
  CHECK(raised.error.python_type == "ValueError");
  CHECK(raised.error.traceback == "TB");
  CHECK(raised.error.grpc_status == -1);

  auto timeout = outcome(core::TransportResult::ended(Kind::deadline_exceeded, 4, "Deadline Exceeded"));
  CHECK(timeout.error.category == ErrorCategory::timeout);
  CHECK(timeout.error.reason == "worker_timeout");
  CHECK(timeout.error.message == "tool slow_tool did not finish within 1234 ms");

  auto cancelled = outcome(core::TransportResult::ended(Kind::cancelled, 1, "Cancelled"));
  CHECK(cancelled.error.reason == "cancelled");
  CHECK(cancelled.error.message == "request cancelled by its caller");

  auto gone = outcome(core::TransportResult::ended(Kind::unavailable, 14, "connection refused"));
  CHECK(gone.error.category == ErrorCategory::worker);
  CHECK(gone.error.reason == "worker_unavailable");
  CHECK(gone.error.grpc_status == 14);
  CHECK(gone.error.message == "worker pool_worker_1_1 went away while running the request: connection refused");

  auto failed = outcome(core::TransportResult::ended(Kind::failed, 13, "internal"));
  CHECK(failed.error.category == ErrorCategory::grpc_error);
  CHECK(failed.error.reason == "grpc_error");
  CHECK(failed.error.grpc_status == 13);
  CHECK(failed.error.message == "internal");
}

TEST_CASE("outcome_from: only endings the worker did not choose may leave the tool running") {
  CHECK(core::may_still_run(Kind::cancelled));
  CHECK(core::may_still_run(Kind::deadline_exceeded));
  CHECK_FALSE(core::may_still_run(Kind::unavailable));
  CHECK_FALSE(core::may_still_run(Kind::ok));
}
