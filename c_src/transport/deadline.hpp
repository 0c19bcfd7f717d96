// A core deadline (steady clock) as the system-clock time point gRPC takes.
#pragma once

#include <chrono>

#include "../core/types.hpp"

namespace snakepit::transport {

inline std::chrono::system_clock::time_point to_system(core::TimePoint deadline) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(deadline - core::SteadyClock::now());
}

}  // namespace snakepit::transport
