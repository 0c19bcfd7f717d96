// Starting and reaping worker processes: posix_spawn (never fork), each in
// its own process group, reaped through a pidfd.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "unique_fd.hpp"

namespace snakepit::core {

struct SpawnSpec {
  std::string executable;          // absolute path
  std::vector<std::string> argv;   // argv[0] included
  std::vector<std::string> env;    // "NAME=value"
  int lifeline_read_fd = -1;       // becomes fd 4 in the child
  std::string working_dir;         // empty: inherit
};

// The child sees: 0 = /dev/null, 1/2 = pipes to us, 3 = ready pipe (write
// end), 4 = lifeline (read end). Every other descriptor is closed.
struct SpawnedProcess {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd ready;   // read end
  UniqueFd out;     // read end
  UniqueFd err;     // read end
};

// Throws std::system_error. `pidfd` is invalid when the child was gone (and
// reaped by the kernel) before it could be opened.
SpawnedProcess spawn_process(const SpawnSpec& spec);

inline constexpr int kStatusUnknown = -1;

// Non-blocking reap through the pidfd. Returns the wait status once exited,
// kStatusUnknown if the process is gone but was reaped by the kernel.
std::optional<int> try_reap(int pidfd);

// Signals the whole process group of a worker; ESRCH is not an error.
void signal_group(pid_t pgid, int signal) noexcept;

std::string describe_exit(int status);

}  // namespace snakepit::core
