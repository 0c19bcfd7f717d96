// One thread, one epoll: fd readiness, timers, and work posted from other
// threads. Handlers run on the loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "types.hpp"
#include "unique_fd.hpp"

namespace snakepit::core {

class EventLoop {
 public:
  using FdHandler = std::function<void(std::uint32_t events)>;
  using Task = std::function<void()>;
  using TimerId = std::uint64_t;
  // Told what a handler, timer or task threw; the loop keeps running.
  using ErrorHandler = std::function<void(const std::string& what)>;

  // `clock` times the timers (default: the steady clock).
  explicit EventLoop(ClockFn clock = {});
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Loop thread only.
  void watch(int fd, FdHandler handler);
  void unwatch(int fd);
  TimerId add_timer(TimePoint when, Task task);
  void cancel_timer(TimerId id);

  // Any thread.
  void post(Task task);
  // Before start().
  void set_error_handler(ErrorHandler handler) { error_handler_ = std::move(handler); }
  void start();
  // Stops and joins; must not be called from the loop thread.
  void stop();
  // After stop(): drops every handler and timer (and what they hold).
  void clear();
  bool on_loop_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  void run();
  void wake();
  void run_posted();
  void run_due_timers();
  int poll_timeout_ms() const;
  template <class F>
  void guarded(F&& callback) noexcept;

  UniqueFd epoll_;
  UniqueFd wake_fd_;
  std::thread thread_;
  bool stopping_ = false;  // loop thread only

  std::mutex posted_mutex_;
  std::vector<Task> posted_;
  bool stop_requested_ = false;

  std::unordered_map<int, FdHandler> handlers_;
  std::multimap<TimePoint, std::pair<TimerId, Task>> timers_;
  std::unordered_map<TimerId, std::multimap<TimePoint, std::pair<TimerId, Task>>::iterator> timer_index_;
  TimerId next_timer_ = 1;
  ErrorHandler error_handler_;
  const ClockFn clock_;
};

}  // namespace snakepit::core
