// spawn_process: what the child gets (fds, argv, env, process group, signal
// state), with /bin/sh as the child.
#include "spawner_helpers.hpp"

using namespace spawner_test;

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

