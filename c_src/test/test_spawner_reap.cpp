// Reaping and signalling: try_reap (SIGCHLD ignored as in the BEAM too),
// signal_group, describe_exit, and the worker guard's reports.
#include "spawner_helpers.hpp"

using namespace spawner_test;

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
