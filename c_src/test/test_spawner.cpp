// spawn_process and friends, with /bin/sh as the child.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "../core/spawner.hpp"

using namespace snakepit::core;

namespace {

constexpr int kWaitMs = 2000;

SpawnSpec sh(const std::string& script) {
  SpawnSpec spec;
  spec.executable = "/bin/sh";
  spec.argv = {"sh", "-c", script};
  spec.env = {"PATH=/usr/bin:/bin"};
  return spec;
}

// Everything the (non-blocking) fd yields until EOF, or until the timeout.
std::string read_to_eof(int fd, int timeout_ms = kWaitMs) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      FAIL_CHECK("timed out reading fd " << fd << ", got so far: " << out);
      return out;
    }
    pollfd p{fd, POLLIN, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) continue;
    char buffer[4096];
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      out.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      return out;
    } else if (errno != EAGAIN && errno != EINTR) {
      FAIL_CHECK("read failed: " << errno);
      return out;
    }
  }
}

// Reads one line (without the newline) from a non-blocking fd.
std::string read_line(int fd, int timeout_ms = kWaitMs) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (out.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char c;
    const ssize_t n = ::read(fd, &c, 1);
    if (n == 1) {
      out.push_back(c);
    } else if (n == 0) {
      break;
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

bool readable_within(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) > 0;
}

// Waits on the pidfd, then reaps.
std::optional<int> wait_exit(const SpawnedProcess& process, int timeout_ms = kWaitMs) {
  pollfd p{process.pidfd.get(), POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
  return try_reap(process.pidfd.get());
}

// Kills and reaps, whatever state the test left the child in.
struct Reaper {
  SpawnedProcess& process;
  ~Reaper() {
    if (!process.pidfd.valid()) return;
    if (try_reap(process.pidfd.get())) return;
    signal_group(process.pid, SIGKILL);
    pollfd p{process.pidfd.get(), POLLIN, 0};
    ::poll(&p, 1, kWaitMs);
    try_reap(process.pidfd.get());
  }
};

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  // A zombie waiting for its (new) parent to reap it is dead too.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  std::getline(stat, content);
  const auto paren = content.rfind(')');
  return paren != std::string::npos && paren + 2 < content.size() && content[paren + 2] == 'Z';
}

bool wait_gone(pid_t pid, int timeout_ms = kWaitMs) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (process_gone(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return process_gone(pid);
}

std::uint64_t status_mask(const std::string& status_lines, const std::string& name) {
  std::istringstream in(status_lines);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + ":", 0) == 0) return std::stoull(line.substr(name.size() + 1), nullptr, 16);
  }
  FAIL("no " << name << " line in: " << status_lines);
  return 0;
}

std::uint64_t bit(int signal) { return std::uint64_t{1} << (signal - 1); }

}  // namespace

TEST_CASE("spawn: fd 3 is the ready pipe, stdout/stderr are pipes, stdin is /dev/null") {
  auto process = spawn_process(sh("printf '{\"status\":\"ready\"}\\n' >&3; echo to-stdout; echo to-stderr >&2; "
                                  "read x; echo \"stdin-rc=$?\" >&3; readlink /proc/$$/fd/0 >&3"));
  Reaper reaper{process};
  CHECK(process.pid > 0);
  CHECK(process.pidfd.valid());
  REQUIRE(process.ready.valid());
  REQUIRE(process.out.valid());
  REQUIRE(process.err.valid());
  // The parent-side ends are non-blocking.
  CHECK((::fcntl(process.ready.get(), F_GETFL) & O_NONBLOCK) != 0);
  CHECK((::fcntl(process.out.get(), F_GETFL) & O_NONBLOCK) != 0);
  // ... and not inherited by later children.
  CHECK((::fcntl(process.ready.get(), F_GETFD) & FD_CLOEXEC) != 0);
  CHECK((::fcntl(process.out.get(), F_GETFD) & FD_CLOEXEC) != 0);
  CHECK((::fcntl(process.err.get(), F_GETFD) & FD_CLOEXEC) != 0);
  CHECK((::fcntl(process.pidfd.get(), F_GETFD) & FD_CLOEXEC) != 0);

  CHECK(read_to_eof(process.ready.get()) == "{\"status\":\"ready\"}\nstdin-rc=1\n/dev/null\n");
  CHECK(read_to_eof(process.out.get()) == "to-stdout\n");
  CHECK(read_to_eof(process.err.get()) == "to-stderr\n");
  auto status = wait_exit(process);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
}

TEST_CASE("spawn: argv, env and working directory") {
  ::setenv("SNAKEPIT_TEST_PARENT_ONLY", "leaked", 1);
  auto spec = sh("echo \"$0|$1|$2\" >&3; echo \"${FOO:-unset}|${SNAKEPIT_TEST_PARENT_ONLY:-unset}\" >&3; pwd >&3");
  spec.argv.push_back("zero");
  spec.argv.push_back("one two");
  spec.argv.push_back("");
  spec.env.push_back("FOO=bar baz");
  spec.working_dir = "/tmp";
  auto process = spawn_process(spec);
  Reaper reaper{process};
  ::unsetenv("SNAKEPIT_TEST_PARENT_ONLY");
  CHECK(read_to_eof(process.ready.get()) == "zero|one two|\nbar baz|unset\n/tmp\n");
  auto status = wait_exit(process);
  REQUIRE(status.has_value());
  CHECK(WEXITSTATUS(*status) == 0);
}

TEST_CASE("spawn: fd 4 is the lifeline read end; EOF when the owner closes it") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  UniqueFd lifeline_read(fds[0]), lifeline_write(fds[1]);
  auto spec = sh("echo started >&3; read x <&4; echo \"eof rc=$?\" >&3");
  spec.lifeline_read_fd = lifeline_read.get();
  auto process = spawn_process(spec);
  Reaper reaper{process};
  lifeline_read.reset();  // the child holds its own copy

  CHECK(read_line(process.ready.get()) == "started");
  // Blocked on the lifeline while we hold the write end.
  CHECK_FALSE(readable_within(process.ready.get(), 150));
  CHECK_FALSE(try_reap(process.pidfd.get()).has_value());

  lifeline_write.reset();
  CHECK(read_to_eof(process.ready.get()) == "eof rc=1\n");
  auto status = wait_exit(process);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
}

namespace {
// Shell builtins only: an external command or a pipeline would add
// descriptors of its own to the shell while it runs.
const char* kListFds =
    "i=0; while [ $i -le 100 ]; do [ -e /proc/$$/fd/$i ] && printf '%s ' $i >&3; i=$((i+1)); done; echo >&3";
}  // namespace

TEST_CASE("spawn: no other descriptor is inherited") {
  // Descriptors the parent forgot to mark close-on-exec, low and high.
  UniqueFd leak_low(::open("/dev/null", O_RDONLY));
  REQUIRE(leak_low.valid());
  UniqueFd leak_high(::dup2(leak_low.get(), 77));
  REQUIRE(leak_high.get() == 77);
  REQUIRE((::fcntl(leak_low.get(), F_GETFD) & FD_CLOEXEC) == 0);
  REQUIRE((::fcntl(leak_high.get(), F_GETFD) & FD_CLOEXEC) == 0);

  SUBCASE("without a lifeline: 0-3") {
    auto process = spawn_process(sh(kListFds));
    Reaper reaper{process};
    CHECK(read_to_eof(process.ready.get()) == "0 1 2 3 \n");
    CHECK(wait_exit(process).has_value());
  }
  SUBCASE("with a lifeline: 0-4") {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    UniqueFd r(fds[0]), w(fds[1]);
    auto spec = sh(kListFds);
    spec.lifeline_read_fd = r.get();
    auto process = spawn_process(spec);
    Reaper reaper{process};
    CHECK(read_to_eof(process.ready.get()) == "0 1 2 3 4 \n");
    CHECK(wait_exit(process).has_value());
  }
  SUBCASE("a lifeline that already sits on fd 4 or below") {
    // The parent's own low descriptors must not be clobbered by the dup2s.
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    UniqueFd r(fds[0]), w(fds[1]);
    UniqueFd saved_stdin(::fcntl(0, F_DUPFD_CLOEXEC, 10));
    REQUIRE(saved_stdin.valid());
    REQUIRE(::dup2(r.get(), 0) == 0);  // the lifeline read end is now fd 0 here
    auto spec = sh("read x <&4; echo \"rc=$?\" >&3");
    spec.lifeline_read_fd = 0;
    std::optional<SpawnedProcess> process;
    try {
      process = spawn_process(spec);
    } catch (...) {
    }
    ::dup2(saved_stdin.get(), 0);
    REQUIRE(process.has_value());
    Reaper reaper{*process};
    r.reset();
    CHECK_FALSE(readable_within(process->ready.get(), 100));
    w.reset();
    CHECK(read_to_eof(process->ready.get()) == "rc=1\n");
    CHECK(wait_exit(*process).has_value());
  }
}

TEST_CASE("spawn: the parent keeps no child-side pipe ends (EOF arrives on exit)") {
  // If the parent still held a write end, read_to_eof would time out.
  auto process = spawn_process(sh("exit 0"));
  Reaper reaper{process};
  CHECK(read_to_eof(process.ready.get()).empty());
  CHECK(read_to_eof(process.out.get()).empty());
  CHECK(read_to_eof(process.err.get()).empty());
  CHECK(wait_exit(process).has_value());
}

TEST_CASE("spawn: the child leads its own process group") {
  auto process = spawn_process(sh("echo $$ >&3; exec sleep 30"));
  Reaper reaper{process};
  CHECK(read_line(process.ready.get()) == std::to_string(process.pid));
  CHECK(::getpgid(process.pid) == process.pid);
  CHECK(::getpgid(process.pid) != ::getpgrp());
  CHECK(::getsid(process.pid) == ::getsid(0));  // same session, new group
  signal_group(process.pid, SIGKILL);
  auto status = wait_exit(process);
  REQUIRE(status.has_value());
  CHECK(WIFSIGNALED(*status));
  CHECK(WTERMSIG(*status) == SIGKILL);
}

TEST_CASE("spawn: empty signal mask and default dispositions, whatever the parent had") {
  const std::string script =
      "while IFS= read -r line; do case \"$line\" in SigBlk*|SigIgn*) echo \"$line\";; esac; done "
      "< /proc/self/status >&3";

  // Ignore SIGINT/SIGTERM process-wide and block some signals in this thread.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  struct sigaction old_int {}, old_term {};
  REQUIRE(::sigaction(SIGINT, &ignore, &old_int) == 0);
  REQUIRE(::sigaction(SIGTERM, &ignore, &old_term) == 0);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGHUP);
  REQUIRE(::pthread_sigmask(SIG_BLOCK, &block, &old_mask) == 0);

  std::optional<SpawnedProcess> process;
  std::string spawn_error;
  try {
    process = spawn_process(sh(script));
  } catch (const std::exception& e) {
    spawn_error = e.what();
  }
  // Restore before any assertion can leave the test.
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);

  REQUIRE_MESSAGE(process.has_value(), spawn_error);
  Reaper reaper{*process};
  const auto lines = read_to_eof(process->ready.get());
  CAPTURE(lines);
  const auto blocked = status_mask(lines, "SigBlk");
  const auto ignored = status_mask(lines, "SigIgn");
  CHECK(blocked == 0);
  CHECK((ignored & bit(SIGINT)) == 0);
  CHECK((ignored & bit(SIGTERM)) == 0);
  CHECK((ignored & bit(SIGHUP)) == 0);
  // glibc's posix_spawn leaves its two internal signals (32, 33; never
  // visible to programs, and re-armed by libc after exec) ignored; every
  // signal a program can use must be at its default.
  const std::uint64_t internal = bit(32) | bit(33);
  CHECK((ignored & ~internal) == 0);
  CHECK(wait_exit(*process).has_value());
}

TEST_CASE("try_reap: nothing while running, the status after exit") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  UniqueFd r(fds[0]), w(fds[1]);
  auto spec = sh("read x <&4; exit 3");
  spec.lifeline_read_fd = r.get();
  auto process = spawn_process(spec);
  Reaper reaper{process};
  r.reset();

  CHECK_FALSE(try_reap(process.pidfd.get()).has_value());
  CHECK_FALSE(readable_within(process.pidfd.get(), 100));
  CHECK_FALSE(try_reap(process.pidfd.get()).has_value());

  w.reset();  // lets the child exit
  auto status = wait_exit(process);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK_FALSE(WIFSIGNALED(*status));
  CHECK(WEXITSTATUS(*status) == 3);
  CHECK(describe_exit(*status) == "exited with status 3");
  // Reaped: the pid is gone; asking again says "gone, status unknown".
  CHECK(::kill(process.pid, 0) == -1);
  CHECK(try_reap(process.pidfd.get()) == std::optional<int>(kStatusUnknown));
}

namespace {
// Sets SIGCHLD to SIG_IGN (as the BEAM does) for the life of the object.
struct IgnoreSigchld {
  struct sigaction old {};
  IgnoreSigchld() {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    REQUIRE(::sigaction(SIGCHLD, &ignore, &old) == 0);
  }
  ~IgnoreSigchld() { ::sigaction(SIGCHLD, &old, nullptr); }
};
}  // namespace

TEST_CASE("try_reap: a child the kernel reaped (SIGCHLD ignored, as in the BEAM)") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  UniqueFd r(fds[0]), w(fds[1]);
  std::optional<int> status;
  {
    IgnoreSigchld ignore;
    // Held on the lifeline so it is still alive when spawn_process opens its pidfd.
    auto spec = sh("read x <&4; exit 5");
    spec.lifeline_read_fd = r.get();
    auto process = spawn_process(spec);
    r.reset();
    CHECK_FALSE(try_reap(process.pidfd.get()).has_value());
    w.reset();
    status = wait_exit(process);
  }
  CHECK(status == std::optional<int>(kStatusUnknown));
  CHECK(describe_exit(kStatusUnknown) == "exited");
}

// With SIGCHLD ignored, as in the BEAM, a child that exits before
// spawn_process reaches pidfd_open is already reaped: spawn_process then
// returns an invalid pidfd (the pool treats that as "exited") instead of
// throwing or signalling a pid that may have been reused.
TEST_CASE("spawn: a child that exits at once while SIGCHLD is ignored") {
  IgnoreSigchld ignore;
  int failures = 0;
  int gone_before_pidfd = 0;
  for (int i = 0; i < 200; ++i) {
    try {
      auto process = spawn_process(sh("exit 0"));
      if (!process.pidfd.valid()) {
        ++gone_before_pidfd;
        CHECK(process_gone(process.pid));
        continue;
      }
      CHECK(wait_exit(process).has_value());
    } catch (const std::system_error&) {
      ++failures;
    }
  }
  CHECK(failures == 0);
  MESSAGE(gone_before_pidfd << " of 200 children were gone before pidfd_open");
}

TEST_CASE("try_reap: a killed child reports the signal") {
  auto process = spawn_process(sh("echo up >&3; exec sleep 30"));
  Reaper reaper{process};
  REQUIRE(read_line(process.ready.get()) == "up");
  REQUIRE(::kill(process.pid, SIGTERM) == 0);
  auto status = wait_exit(process);
  REQUIRE(status.has_value());
  CHECK(WIFSIGNALED(*status));
  CHECK_FALSE(WIFEXITED(*status));
  CHECK(WTERMSIG(*status) == SIGTERM);
  CHECK(describe_exit(*status).find("killed by signal") == 0);
}

TEST_CASE("signal_group reaches the whole group, grandchildren included") {
  auto process = spawn_process(sh("sleep 30 & echo $! >&3; wait"));
  Reaper reaper{process};
  const auto line = read_line(process.ready.get());
  REQUIRE_FALSE(line.empty());
  const pid_t grandchild = static_cast<pid_t>(std::stol(line));
  REQUIRE(grandchild > 0);
  CHECK(::getpgid(grandchild) == process.pid);
  CHECK_FALSE(process_gone(grandchild));

  signal_group(process.pid, SIGTERM);
  auto status = wait_exit(process);
  REQUIRE(status.has_value());
  CHECK(WIFSIGNALED(*status));
  CHECK(WTERMSIG(*status) == SIGTERM);
  CHECK(wait_gone(grandchild));
  if (!process_gone(grandchild)) ::kill(grandchild, SIGKILL);
}

TEST_CASE("signal_group ignores a group that no longer exists and bad pids") {
  auto process = spawn_process(sh("exit 0"));
  auto status = wait_exit(process);
  REQUIRE(status.has_value());
  errno = 0;
  signal_group(process.pid, SIGKILL);  // ESRCH: fine, no throw
  signal_group(0, SIGKILL);            // must not signal our own group
  signal_group(-1, SIGKILL);           // must not signal everything
  CHECK(true);                         // still alive to tell
}

TEST_CASE("describe_exit") {
  CHECK(describe_exit(W_EXITCODE(0, 0)) == "exited with status 0");
  CHECK(describe_exit(W_EXITCODE(1, 0)) == "exited with status 1");
  CHECK(describe_exit(W_EXITCODE(255, 0)) == "exited with status 255");
  CHECK(describe_exit(SIGKILL) == "killed by signal SIGKILL (Killed)");
  CHECK(describe_exit(SIGSEGV).find("killed by signal") == 0);
  CHECK(describe_exit(W_STOPCODE(SIGSTOP)).find("ended (status") == 0);
  CHECK(describe_exit(kStatusUnknown) == "exited");
}

TEST_CASE("spawn of a missing executable throws std::system_error") {
  SpawnSpec spec = sh("true");
  spec.executable = "/nonexistent/snakepit-test-binary";
  spec.argv[0] = spec.executable;
  CHECK_THROWS_AS(spawn_process(spec), std::system_error);
  spec = sh("true");
  spec.working_dir = "/nonexistent-dir-for-snakepit-test";
  CHECK_THROWS_AS(spawn_process(spec), std::system_error);
}

// ------------------------------------------------------------ worker guard

namespace {

std::string guard_binary() {
  const char* guard = std::getenv("SNAKEPIT_WORKER_GUARD");
  return std::filesystem::absolute(guard != nullptr ? guard : "priv/snakepit_worker_guard").string();
}

// The guard's pidfd turns readable once it has reported and exited.
int guarded_status(const SpawnedProcess& process, int timeout_ms = kWaitMs) {
  pollfd p{process.pidfd.get(), POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return -2;
  try_reap(process.pidfd.get());
  return read_guard_status(process.status.get());
}

}  // namespace

TEST_CASE("guard: the worker's pid, its own process group, fds 0-3, the exit status") {
  auto process = spawn_guarded(sh(std::string("echo $$ >&3; ") + kListFds + "; exit 3"), guard_binary());
  CHECK(process.pid > 0);
  CHECK(read_line(process.ready.get()) == std::to_string(process.pid));
  CHECK(read_to_eof(process.ready.get()) == "0 1 2 3 \n");
  const int status = guarded_status(process);
  CHECK(describe_exit(status) == "exited with status 3");
  CHECK(exit_cause(status).exit_status == std::optional<int>(3));
  CHECK_FALSE(exit_cause(status).signal.has_value());
}

TEST_CASE("guard: a segfault is reported even with SIGCHLD ignored, as in the BEAM") {
  IgnoreSigchld ignore;
  auto process = spawn_guarded(sh("echo up >&3; exec sleep 30"), guard_binary());
  REQUIRE(read_line(process.ready.get()) == "up");
  CHECK(::getpgid(process.pid) == process.pid);
  signal_group(process.pid, SIGSEGV);
  const int status = guarded_status(process);
  CHECK(describe_exit(status) == "killed by signal SIGSEGV (Segmentation fault)");
  CHECK(exit_cause(status).signal == std::optional<int>(SIGSEGV));
  CHECK(signal_name(SIGSEGV) == "SIGSEGV");
}

TEST_CASE("guard: the pool's SIGTERM to the worker's group does not reach the guard") {
  auto process = spawn_guarded(sh("echo up >&3; exec sleep 30"), guard_binary());
  REQUIRE(read_line(process.ready.get()) == "up");
  signal_group(process.pid, SIGTERM);
  CHECK(describe_exit(guarded_status(process)) == "killed by signal SIGTERM (Terminated)");
}

TEST_CASE("guard: lifeline EOF kills the worker's group, grandchildren included") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  UniqueFd r(fds[0]), w(fds[1]);
  auto spec = sh("sleep 30 & echo $! >&3; wait");
  spec.lifeline_read_fd = r.get();
  auto process = spawn_guarded(spec, guard_binary());
  r.reset();
  const pid_t grandchild = static_cast<pid_t>(std::stol(read_line(process.ready.get())));
  CHECK_FALSE(readable_within(process.pidfd.get(), 100));
  w.reset();
  CHECK(describe_exit(guarded_status(process)) == "killed by signal SIGKILL (Killed)");
  CHECK(wait_gone(grandchild));
  CHECK(read_to_eof(process.err.get()).find("lifeline closed") != std::string::npos);
}

TEST_CASE("guard: a missing executable throws the worker's spawn error") {
  SpawnSpec spec = sh("true");
  spec.executable = "/nonexistent/snakepit-test-binary";
  try {
    spawn_guarded(spec, guard_binary());
    FAIL("no exception");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == ENOENT);
  }
  CHECK(read_guard_status(-1) == kStatusUnknown);
}
