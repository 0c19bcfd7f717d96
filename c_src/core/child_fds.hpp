// The descriptor numbers a worker process is started with: the one source
// for the spawner, the worker guard and the worker's command line.
#pragma once

namespace snakepit::core {

// The worker writes its one ready (or startup error) line here.
inline constexpr int kReadyFd = 3;
// Read end of the lifeline pipe: EOF means the BEAM is gone.
inline constexpr int kLifelineFd = 4;
// The guard's report: "pid N", then "exit STATUS" (or "error ERRNO").
inline constexpr int kStatusFd = 5;

}  // namespace snakepit::core
