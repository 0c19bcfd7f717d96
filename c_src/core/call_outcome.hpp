// The one place a transport result becomes a call's outcome.
#pragma once

#include <string>

#include "types.hpp"

namespace snakepit::core {

// What the outcome's messages name about the call.
struct CallFacts {
  const std::string& tool;
  Millis timeout;
  const std::string& worker_id;
};

Outcome outcome_from(TransportResult&& result, const CallFacts& call);

// Neither ending came from the worker: it may still be running the tool.
inline bool may_still_run(TransportResult::Kind kind) {
  return kind == TransportResult::Kind::cancelled || kind == TransportResult::Kind::deadline_exceeded;
}

}  // namespace snakepit::core
