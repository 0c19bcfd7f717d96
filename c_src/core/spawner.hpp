// Starting and reaping worker processes: posix_spawn (never fork), each in
// its own process group, reaped through a pidfd; a worker runs under the
// worker guard (c_src/guard), which reports its wait status.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "child_fds.hpp"
#include "unique_fd.hpp"

namespace snakepit::core {

struct SpawnSpec {
  std::string executable;          // absolute path
  std::vector<std::string> argv;   // argv[0] included
  std::vector<std::string> env;    // "NAME=value"
  int lifeline_read_fd = -1;       // becomes kLifelineFd in the child
  std::string working_dir;         // empty: inherit
  bool status_pipe = false;        // a pipe on kStatusFd, read end in SpawnedProcess::status
};

// The child sees: 0 = /dev/null, 1/2 = pipes to us, kReadyFd = ready pipe
// (write end), kLifelineFd = lifeline (read end), kStatusFd = status pipe
// (write end). Every other descriptor is closed.
struct SpawnedProcess {
  pid_t pid = -1;   // the worker (under a guard: the guard's child), leader of its process group
  UniqueFd pidfd;   // of the direct child (under a guard: the guard's)
  UniqueFd ready;   // read end
  UniqueFd out;     // read end
  UniqueFd err;     // read end
  UniqueFd status;  // read end, when asked for
};

// Throws std::system_error. `pidfd` is invalid when the child was gone (and
// reaped by the kernel) before it could be opened.
SpawnedProcess spawn_process(const SpawnSpec& spec);

// spawn_process through the worker guard at `guard`: `pid` is the worker's
// (read from the guard's first line), `pidfd` the guard's, `status` carries
// the guard's "exit STATUS" line. Throws std::system_error, with the
// worker's posix_spawn errno when the guard could not start it.
SpawnedProcess spawn_guarded(const SpawnSpec& spec, const std::string& guard);

inline constexpr int kStatusUnknown = -1;

// Non-blocking reap through the pidfd. Returns the wait status once exited,
// kStatusUnknown if the process is gone but was reaped by the kernel.
std::optional<int> try_reap(int pidfd);

// The worker's wait status from a guard's status pipe (non-blocking; the
// guard writes it before it exits), kStatusUnknown when there is none.
int read_guard_status(int status_fd);

// Signals the whole process group of a worker; ESRCH is not an error.
void signal_group(pid_t pgid, int signal) noexcept;

// How a process ended, for messages: "exited with status 3", "killed by
// signal SIGSEGV (Segmentation fault)", "exited" (status unknown).
std::string describe_exit(int status);

// The parts of a wait status an error carries.
struct ExitCause {
  std::optional<int> exit_status;  // exited normally with this code
  std::optional<int> signal;       // killed by this signal
};
ExitCause exit_cause(int status);

// "SIGSEGV" for SIGSEGV; "SIG" + the number for a signal without a name.
std::string signal_name(int signal);

}  // namespace snakepit::core
