// Spawner tests' shared helpers: a /bin/sh spawn spec, reading and waiting
// on a child's fds and pidfd, and checks on process state.
#pragma once

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

namespace spawner_test {

using namespace snakepit::core;

inline constexpr int kWaitMs = 2000;

// Lists the child's open fds on fd 3. Shell builtins only: an external
// command or a pipeline would add descriptors of its own while it runs.
inline const char* kListFds =
    "i=0; while [ $i -le 100 ]; do [ -e /proc/$$/fd/$i ] && printf '%s ' $i >&3; i=$((i+1)); done; echo >&3";

inline SpawnSpec sh(const std::string& script) {
  SpawnSpec spec;
  spec.executable = "/bin/sh";
  spec.argv = {"sh", "-c", script};
  spec.env = {"PATH=/usr/bin:/bin"};
  return spec;
}

// Everything the (non-blocking) fd yields until EOF, or until the timeout.
inline std::string read_to_eof(int fd, int timeout_ms = kWaitMs) {
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
inline std::string read_line(int fd, int timeout_ms = kWaitMs) {
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

inline bool readable_within(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) > 0;
}

// Waits on the pidfd, then reaps.
inline std::optional<int> wait_exit(const SpawnedProcess& process, int timeout_ms = kWaitMs) {
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

inline bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  // A zombie waiting for its (new) parent to reap it is dead too.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  std::getline(stat, content);
  const auto paren = content.rfind(')');
  return paren != std::string::npos && paren + 2 < content.size() && content[paren + 2] == 'Z';
}

inline bool wait_gone(pid_t pid, int timeout_ms = kWaitMs) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (process_gone(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return process_gone(pid);
}

inline std::uint64_t status_mask(const std::string& status_lines, const std::string& name) {
  std::istringstream in(status_lines);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + ":", 0) == 0) return std::stoull(line.substr(name.size() + 1), nullptr, 16);
  }
  FAIL("no " << name << " line in: " << status_lines);
  return 0;
}

inline std::uint64_t bit(int signal) { return std::uint64_t{1} << (signal - 1); }

}  // namespace spawner_test
