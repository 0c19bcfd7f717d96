// Pool event names that leave the pool as text.
#include "pool_event.hpp"

namespace snakepit::core {

const char* to_string(RecycleReason reason) noexcept {
  switch (reason) {
    case RecycleReason::ttl_expired: return "ttl_expired";
    case RecycleReason::max_requests: return "max_requests";
  }
  return "ttl_expired";
}

}  // namespace snakepit::core
