#include "spawner.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

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
  // The child-side ends must not sit on 0..4, or one dup2 below could
  // overwrite a descriptor that a later dup2 still reads.
  UniqueFd child_out = above_targets(out.write.get());
  UniqueFd child_err = above_targets(err.write.get());
  UniqueFd child_ready = above_targets(ready.write.get());
  UniqueFd child_lifeline = spec.lifeline_read_fd >= 0 ? above_targets(spec.lifeline_read_fd) : UniqueFd();

  FileActions actions;
  actions.open(0, "/dev/null", O_RDONLY);
  actions.dup2(child_out.get(), 1);
  actions.dup2(child_err.get(), 2);
  actions.dup2(child_ready.get(), 3);
  if (child_lifeline.valid()) actions.dup2(child_lifeline.get(), 4);
  actions.close_from(child_lifeline.valid() ? 5 : 4);
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
  for (int fd : {process.ready.get(), process.out.get(), process.err.get()})
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return process;
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

std::string describe_exit(int status) {
  if (status == kStatusUnknown) return "exited";
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + ::strsignal(WTERMSIG(status));
  return "ended (status " + std::to_string(status) + ")";
}

}  // namespace snakepit::core
