// snakepit_worker_guard: the parent of one Python worker. The BEAM ignores
// SIGCHLD, so the kernel reaps the BEAM's children and their wait status is
// lost; this small process is the worker's parent instead, waits for it and
// reports how it ended to the pool. It also holds the lifeline: when the
// BEAM dies (EOF on the lifeline) it kills the worker's process group.
//
//   snakepit_worker_guard EXECUTABLE ARGV0 ARGS...
//
// Started by the pool's spawner (child_fds.hpp): 0-2 as the worker gets
// them, kReadyFd passed on to the worker, kLifelineFd (optional) kept here,
// kStatusFd for the report lines "pid N\n", then "exit STATUS\n" (a wait
// status) or "error ERRNO\n" when the worker could not be started. The
// worker leads its own process group, which the pool signals; the guard
// stays outside it so it outlives the worker to report.
#include <fmt/format.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <initializer_list>

#include "../core/child_fds.hpp"

extern char** environ;

namespace {

using snakepit::core::kLifelineFd;
using snakepit::core::kReadyFd;
using snakepit::core::kStatusFd;

void report(const char* what, long value) {
  char line[64];
  const auto end = fmt::format_to_n(line, sizeof line, "{} {}\n", what, value);
  // One short write to a pipe is atomic; a pool that went away is no error.
  if (::write(kStatusFd, line, std::min(end.size, sizeof line)) < 0) return;
}

int spawn_worker(char* const argv[], pid_t& pid) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_addclosefrom_np(&actions, kReadyFd + 1);
  ::posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &all);
  ::posix_spawnattr_setpgroup(&attr, 0);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  const int rc = ::posix_spawn(&pid, argv[0], &actions, &attr, argv + 1, environ);
  ::posix_spawnattr_destroy(&attr);
  ::posix_spawn_file_actions_destroy(&actions);
  return rc;
}

// The wait status as waitpid(2) encodes it.
int wait_status(const siginfo_t& info) {
  return info.si_code == CLD_EXITED ? W_EXITCODE(info.si_status, 0) : (info.si_status & 0x7f);
}

void on_lifeline_closed(pid_t worker) {
  char line[160];
  const auto end = fmt::format_to_n(
      line, sizeof line, "snakepit worker guard: lifeline closed, the parent is gone; killing process group {}\n",
      worker);
  if (::write(STDERR_FILENO, line, std::min(end.size, sizeof line)) < 0) {
    // stderr's reader is usually the parent that just died.
  }
  ::kill(-worker, SIGKILL);
}

// Waits for the worker, watching the lifeline meanwhile. Returns its wait status.
int supervise(pid_t worker) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, worker, 0));
  bool lifeline = ::fcntl(kLifelineFd, F_GETFD) != -1;
  while (pidfd >= 0) {
    pollfd fds[2] = {{pidfd, POLLIN, 0}, {kLifelineFd, POLLIN, 0}};
    if (::poll(fds, lifeline ? 2 : 1, -1) < 0) continue;  // EINTR
    if (fds[0].revents != 0) break;
    char buffer[64];
    if (fds[1].revents != 0 && ::read(kLifelineFd, buffer, sizeof buffer) <= 0) {
      lifeline = false;
      on_lifeline_closed(worker);
    }
  }
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(worker), &info, WEXITED) != 0) {
    if (errno != EINTR) return -1;
  }
  return wait_status(info);
}

}  // namespace

int main(int argc, char* argv[]) {
  if (argc < 3) {
    fmt::print(stderr, "usage: {} EXECUTABLE ARGV0 [ARGS...]\n", argv[0]);
    return 2;
  }
  // Only the pool signals the worker's group; a stray signal to the guard
  // must not lose the report, and a gone reader must not kill it.
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2}) ::signal(sig, SIG_IGN);
  pid_t worker = -1;
  if (const int rc = spawn_worker(argv + 1, worker)) {
    report("error", rc);
    return 127;
  }
  // The worker holds the ready pipe now: its EOF must follow the worker's.
  ::close(kReadyFd);
  report("pid", worker);
  report("exit", supervise(worker));
  return 0;
}
