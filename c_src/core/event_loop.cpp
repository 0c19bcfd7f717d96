// EventLoop: epoll, the wake eventfd, timers on the injected clock, posted tasks.
#include "event_loop.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <exception>
#include <system_error>

namespace snakepit::core {

EventLoop::EventLoop(ClockFn clock)
    : epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      clock_(clock ? std::move(clock) : ClockFn(&SteadyClock::now)) {
  if (!epoll_.valid() || !wake_fd_.valid()) throw std::system_error(errno, std::generic_category(), "event loop");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev) != 0)
    throw std::system_error(errno, std::generic_category(), "epoll_ctl");
}

EventLoop::~EventLoop() {
  if (thread_.joinable()) {
    if (on_loop_thread()) {
      thread_.detach();
    } else {
      stop();
    }
  }
}

void EventLoop::start() { thread_ = std::thread([this] { run(); }); }

void EventLoop::stop() {
  {
    std::lock_guard lock(posted_mutex_);
    stop_requested_ = true;
  }
  wake();
  if (thread_.joinable() && !on_loop_thread()) thread_.join();
}

void EventLoop::clear() {
  handlers_.clear();
  timer_index_.clear();
  timers_.clear();
  std::lock_guard lock(posted_mutex_);
  posted_.clear();
}

void EventLoop::watch(int fd, FdHandler handler) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    throw std::system_error(errno, std::generic_category(), "epoll_ctl add");
  handlers_[fd] = std::move(handler);
}

void EventLoop::unwatch(int fd) {
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  handlers_.erase(fd);
}

EventLoop::TimerId EventLoop::add_timer(TimePoint when, Task task) {
  const TimerId id = next_timer_++;
  auto it = timers_.emplace(when, std::make_pair(id, std::move(task)));
  timer_index_[id] = it;
  return id;
}

void EventLoop::cancel_timer(TimerId id) {
  auto it = timer_index_.find(id);
  if (it == timer_index_.end()) return;
  timers_.erase(it->second);
  timer_index_.erase(it);
}

void EventLoop::post(Task task) {
  {
    std::lock_guard lock(posted_mutex_);
    // After stop nothing runs it; keeping it would hold what it captured.
    if (stop_requested_) return;
    posted_.push_back(std::move(task));
  }
  wake();
}

void EventLoop::wake() {
  std::uint64_t one = 1;
  [[maybe_unused]] auto written = ::write(wake_fd_.get(), &one, sizeof one);
}

// An exception must not leave the loop thread (it would terminate the
// process, here the BEAM): report it and carry on with the next event.
template <class F>
void EventLoop::guarded(F&& callback) noexcept {
  try {
    callback();
  } catch (const std::exception& e) {
    if (error_handler_) error_handler_(e.what());
  } catch (...) {
    if (error_handler_) error_handler_("unknown exception");
  }
}

void EventLoop::run_posted() {
  std::vector<Task> tasks;
  {
    std::lock_guard lock(posted_mutex_);
    tasks.swap(posted_);
    stopping_ = stop_requested_;
  }
  for (auto& task : tasks) guarded(task);
}

void EventLoop::run_due_timers() {
  const auto now = clock_();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    auto node = timers_.extract(timers_.begin());
    timer_index_.erase(node.mapped().first);
    guarded(node.mapped().second);
  }
}

int EventLoop::poll_timeout_ms() const {
  if (timers_.empty()) return -1;
  auto wait = std::chrono::ceil<Millis>(timers_.begin()->first - clock_()).count();
  return wait < 0 ? 0 : static_cast<int>(std::min<long long>(wait, 60'000));
}

void EventLoop::run() {
  constexpr int kMaxEvents = 64;
  epoll_event events[kMaxEvents];
  while (!stopping_) {
    const int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, poll_timeout_ms());
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_.get()) {
        std::uint64_t count;
        [[maybe_unused]] auto got = ::read(wake_fd_.get(), &count, sizeof count);
        continue;
      }
      auto it = handlers_.find(fd);
      if (it == handlers_.end()) continue;
      auto handler = it->second;  // the handler may unwatch itself
      guarded([&] { handler(events[i].events); });
    }
    run_posted();
    run_due_timers();
  }
}

}  // namespace snakepit::core
