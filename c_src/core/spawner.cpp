// Spawner: posix_spawn of a worker (directly or under its guard), pidfd
// reaping, group signals and exit descriptions.
#include "spawner.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poll.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <string_view>
#include <system_error>

#include <fmt/format.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace snakepit::core {
namespace {

[[noreturn]] void fail(int err, const char* what) { throw std::system_error(err, std::generic_category(), what); }

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) fail(errno, "pipe2");
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

UniqueFd above_targets(int fd) {
  UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 10));
  if (!copy.valid()) fail(errno, "fcntl(F_DUPFD_CLOEXEC)");
  return copy;
}

std::vector<char*> c_strings(const std::vector<std::string>& items) {
  std::vector<char*> out;
  out.reserve(items.size() + 1);
  for (const auto& item : items) out.push_back(const_cast<char*>(item.c_str()));
  out.push_back(nullptr);
  return out;
}

class FileActions {
 public:
  FileActions() {
    if (int rc = ::posix_spawn_file_actions_init(&actions_)) fail(rc, "posix_spawn_file_actions_init");
  }
  ~FileActions() { ::posix_spawn_file_actions_destroy(&actions_); }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;
  void close(int fd) {
    if (int rc = ::posix_spawn_file_actions_addclose(&actions_, fd)) fail(rc, "addclose");
  }
  void dup2(int from, int to) {
    if (int rc = ::posix_spawn_file_actions_adddup2(&actions_, from, to)) fail(rc, "adddup2");
  }
  void open(int fd, const char* path, int flags) {
    if (int rc = ::posix_spawn_file_actions_addopen(&actions_, fd, path, flags, 0)) fail(rc, "addopen");
  }
  void close_from(int fd) {
    if (int rc = ::posix_spawn_file_actions_addclosefrom_np(&actions_, fd)) fail(rc, "addclosefrom");
  }
  void chdir(const std::string& dir) {
    if (int rc = ::posix_spawn_file_actions_addchdir_np(&actions_, dir.c_str())) fail(rc, "addchdir");
  }
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
};

class SpawnAttributes {
 public:
  SpawnAttributes() {
    if (int rc = ::posix_spawnattr_init(&attr_)) fail(rc, "posix_spawnattr_init");
    sigset_t none;
    sigset_t all;
    sigemptyset(&none);
    sigfillset(&all);
    ::posix_spawnattr_setsigmask(&attr_, &none);
    ::posix_spawnattr_setsigdefault(&attr_, &all);
    ::posix_spawnattr_setpgroup(&attr_, 0);
    ::posix_spawnattr_setflags(&attr_, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  ~SpawnAttributes() { ::posix_spawnattr_destroy(&attr_); }
  SpawnAttributes(const SpawnAttributes&) = delete;
  SpawnAttributes& operator=(const SpawnAttributes&) = delete;
  posix_spawnattr_t* get() { return &attr_; }

 private:
  posix_spawnattr_t attr_;
};

}  // namespace

SpawnedProcess spawn_process(const SpawnSpec& spec) {
  Pipe ready = make_pipe();
  Pipe out = make_pipe();
  Pipe err = make_pipe();
  Pipe status = spec.status_pipe ? make_pipe() : Pipe{};
  // The child-side ends must not sit on 0..kStatusFd, or one dup2 below
  // could overwrite a descriptor that a later dup2 still reads.
  UniqueFd child_out = above_targets(out.write.get());
  UniqueFd child_err = above_targets(err.write.get());
  UniqueFd child_ready = above_targets(ready.write.get());
  UniqueFd child_lifeline = spec.lifeline_read_fd >= 0 ? above_targets(spec.lifeline_read_fd) : UniqueFd();
  UniqueFd child_status = spec.status_pipe ? above_targets(status.write.get()) : UniqueFd();

  FileActions actions;
  actions.open(0, "/dev/null", O_RDONLY);
  actions.dup2(child_out.get(), 1);
  actions.dup2(child_err.get(), 2);
  actions.dup2(child_ready.get(), kReadyFd);
  if (child_lifeline.valid()) actions.dup2(child_lifeline.get(), kLifelineFd);
  if (child_status.valid()) {
    if (!child_lifeline.valid()) actions.close(kLifelineFd);
    actions.dup2(child_status.get(), kStatusFd);
  }
  actions.close_from(child_status.valid() ? kStatusFd + 1 : child_lifeline.valid() ? kLifelineFd + 1 : kReadyFd + 1);
  if (!spec.working_dir.empty()) actions.chdir(spec.working_dir);

  SpawnAttributes attributes;
  auto argv = c_strings(spec.argv);
  auto envp = c_strings(spec.env);
  pid_t pid = -1;
  if (int rc = ::posix_spawn(&pid, spec.executable.c_str(), actions.get(), attributes.get(), argv.data(), envp.data()))
    fail(rc, "posix_spawn");

  SpawnedProcess process;
  process.pid = pid;
  process.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  // ESRCH: the child already exited and, SIGCHLD being ignored, was reaped;
  // the caller sees an invalid pidfd and treats the process as gone.
  if (!process.pidfd.valid() && errno != ESRCH) {
    const int saved = errno;
    ::kill(pid, SIGKILL);
    fail(saved, "pidfd_open");
  }
  process.ready = std::move(ready.read);
  process.out = std::move(out.read);
  process.err = std::move(err.read);
  process.status = std::move(status.read);
  for (int fd : {process.ready.get(), process.out.get(), process.err.get()})
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return process;
}

namespace {

constexpr auto kGuardReportTimeout = std::chrono::seconds(10);

// One "WORD NUMBER" line from the guard's status pipe (blocking, bounded).
std::pair<std::string, long> read_guard_line(int fd) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + kGuardReportTimeout;
  while (line.empty() || line.back() != '\n') {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    const int ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) fail(ETIMEDOUT, "worker guard did not report the worker's pid");
    char c;
    const ssize_t n = ::read(fd, &c, 1);
    if (n == 0) fail(EPIPE, "worker guard ended before reporting the worker's pid");
    if (n < 0 && errno != EINTR) fail(errno, "read from the worker guard");
    if (n == 1) line.push_back(c);
  }
  const auto space = line.find(' ');
  long value = 0;
  if (space == std::string::npos || std::from_chars(line.data() + space + 1, line.data() + line.size() - 1, value).ec != std::errc())
    fail(EPROTO, "worker guard sent an unreadable line");
  return {line.substr(0, space), value};
}

}  // namespace

SpawnedProcess spawn_guarded(const SpawnSpec& spec, const std::string& guard) {
  SpawnSpec outer = spec;
  outer.executable = guard;
  outer.argv.insert(outer.argv.begin(), {guard, spec.executable});
  outer.status_pipe = true;
  SpawnedProcess process = spawn_process(outer);
  const auto [word, value] = read_guard_line(process.status.get());
  if (word == "error") fail(static_cast<int>(value), "posix_spawn");
  if (word != "pid" || value <= 0) fail(EPROTO, "worker guard sent no pid");
  process.pid = static_cast<pid_t>(value);
  ::fcntl(process.status.get(), F_SETFL, ::fcntl(process.status.get(), F_GETFL) | O_NONBLOCK);
  return process;
}

int read_guard_status(int status_fd) {
  char buffer[64];
  const ssize_t n = ::read(status_fd, buffer, sizeof buffer);
  constexpr std::string_view kExit = "exit ";
  const std::string_view text(buffer, n > 0 ? static_cast<std::size_t>(n) : 0);
  if (text.substr(0, kExit.size()) != kExit) return kStatusUnknown;
  int status = kStatusUnknown;
  std::from_chars(text.data() + kExit.size(), text.data() + text.size(), status);
  return status < 0 ? kStatusUnknown : status;
}

std::optional<int> try_reap(int pidfd) {
  siginfo_t info{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG) != 0) {
    // The BEAM ignores SIGCHLD, so the kernel reaps our children itself:
    // the pidfd turned readable, the process is gone, its status is lost.
    return errno == ECHILD ? std::optional<int>(kStatusUnknown) : std::nullopt;
  }
  if (info.si_pid == 0) return std::nullopt;
  return info.si_code == CLD_EXITED ? W_EXITCODE(info.si_status, 0) : info.si_status & 0x7f;
}

void signal_group(pid_t pgid, int signal) noexcept {
  if (pgid > 0) ::kill(-pgid, signal);
}

std::string signal_name(int signal) {
  if (const char* abbrev = ::sigabbrev_np(signal)) return fmt::format("SIG{}", abbrev);
  return fmt::format("SIG{}", signal);
}

std::string describe_exit(int status) {
  if (status == kStatusUnknown) return "exited";
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} ({})", signal_name(WTERMSIG(status)), ::strsignal(WTERMSIG(status)));
  return fmt::format("ended (status {})", status);
}

ExitCause exit_cause(int status) {
  if (status == kStatusUnknown) return {};
  if (WIFEXITED(status)) return {WEXITSTATUS(status), std::nullopt};
  if (WIFSIGNALED(status)) return {std::nullopt, WTERMSIG(status)};
  return {};
}

}  // namespace snakepit::core
