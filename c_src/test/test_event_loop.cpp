// EventLoop: posted work, timers, fd watches, stop.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../core/event_loop.hpp"

using snakepit::core::EventLoop;
using snakepit::core::Millis;
using snakepit::core::SteadyClock;
using snakepit::core::UniqueFd;

namespace {

constexpr auto kWait = std::chrono::seconds(2);

// A tiny latch-like recorder shared by the loop thread and the test thread.
struct Recorder {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::string> items;

  void add(std::string item) {
    {
      std::lock_guard lock(mutex);
      items.push_back(std::move(item));
    }
    cv.notify_all();
  }
  bool wait_for_count(std::size_t n, std::chrono::milliseconds timeout = kWait) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, timeout, [&] { return items.size() >= n; });
  }
  std::vector<std::string> snapshot() {
    std::lock_guard lock(mutex);
    return items;
  }
  // Comma-joined, so a failed CHECK shows the values.
  std::string joined() {
    std::string out;
    for (const auto& item : snapshot()) out += (out.empty() ? "" : ",") + item;
    return out;
  }
};

struct Pipe {
  UniqueFd read, write;
};

Pipe make_pipe() {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

}  // namespace

TEST_CASE("post runs tasks on the loop thread, in order") {
  EventLoop loop;
  loop.start();
  Recorder rec;
  std::thread::id loop_thread;
  bool on_loop = false;
  for (int i = 0; i < 5; ++i) {
    loop.post([&, i] {
      if (i == 0) {
        loop_thread = std::this_thread::get_id();
        on_loop = loop.on_loop_thread();
      }
      rec.add(std::to_string(i));
    });
  }
  REQUIRE(rec.wait_for_count(5));
  CHECK(rec.joined() == "0,1,2,3,4");
  CHECK(loop_thread != std::this_thread::get_id());
  CHECK(on_loop);
  CHECK_FALSE(loop.on_loop_thread());
  loop.stop();
}

TEST_CASE("post from several threads runs everything") {
  EventLoop loop;
  loop.start();
  std::atomic<int> count{0};
  std::mutex mutex;
  std::condition_variable cv;
  constexpr int kThreads = 4, kEach = 250;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        loop.post([&] {
          if (++count == kThreads * kEach) {
            std::lock_guard lock(mutex);
            cv.notify_all();
          }
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  {
    std::unique_lock lock(mutex);
    CHECK(cv.wait_for(lock, kWait, [&] { return count.load() == kThreads * kEach; }));
  }
  loop.stop();
  CHECK(count.load() == kThreads * kEach);
}

TEST_CASE("timers fire in deadline order, not insertion order") {
  EventLoop loop;
  loop.start();
  Recorder rec;
  const auto base = SteadyClock::now();
  loop.post([&] {
    loop.add_timer(base + Millis(60), [&] { rec.add("c"); });
    loop.add_timer(base + Millis(20), [&] { rec.add("a"); });
    loop.add_timer(base + Millis(40), [&] { rec.add("b"); });
    // Equal deadlines keep insertion order.
    loop.add_timer(base + Millis(80), [&] { rec.add("d1"); });
    loop.add_timer(base + Millis(80), [&] { rec.add("d2"); });
  });
  REQUIRE(rec.wait_for_count(5));
  CHECK(SteadyClock::now() - base >= Millis(80));
  CHECK(rec.joined() == "a,b,c,d1,d2");
  loop.stop();
}

TEST_CASE("a timer in the past fires promptly") {
  EventLoop loop;
  loop.start();
  Recorder rec;
  loop.post([&] { loop.add_timer(SteadyClock::now() - Millis(100), [&] { rec.add("late"); }); });
  CHECK(rec.wait_for_count(1, Millis(500)));
  loop.stop();
}

TEST_CASE("a timer may add another timer") {
  EventLoop loop;
  loop.start();
  Recorder rec;
  loop.post([&] {
    loop.add_timer(SteadyClock::now() + Millis(5), [&] {
      rec.add("first");
      loop.add_timer(SteadyClock::now() + Millis(5), [&] { rec.add("second"); });
    });
  });
  REQUIRE(rec.wait_for_count(2));
  CHECK(rec.joined() == "first,second");
  loop.stop();
}

TEST_CASE("cancel_timer prevents firing") {
  EventLoop loop;
  loop.start();
  Recorder rec;
  const auto base = SteadyClock::now();
  loop.post([&] {
    auto cancelled = loop.add_timer(base + Millis(20), [&] { rec.add("cancelled"); });
    loop.add_timer(base + Millis(60), [&] { rec.add("kept"); });
    loop.cancel_timer(cancelled);
    loop.cancel_timer(cancelled);  // twice: harmless
    loop.cancel_timer(987654);     // unknown: harmless
  });
  // The later timer firing proves the earlier deadline has passed.
  REQUIRE(rec.wait_for_count(1));
  CHECK(rec.joined() == "kept");
  loop.stop();
}

TEST_CASE("cancel_timer from inside another timer, same deadline batch") {
  EventLoop loop;
  loop.start();
  Recorder rec;
  const auto when = SteadyClock::now() + Millis(20);
  EventLoop::TimerId second = 0;  // outlives the posted task
  loop.post([&] {
    loop.add_timer(when, [&] {
      rec.add("first");
      loop.cancel_timer(second);
    });
    second = loop.add_timer(when, [&] { rec.add("second"); });
    loop.add_timer(when + Millis(30), [&] { rec.add("third"); });
  });
  REQUIRE(rec.wait_for_count(2));
  CHECK(rec.joined() == "first,third");
  loop.stop();
}

TEST_CASE("watch a pipe: the handler runs on write; unwatch stops it") {
  EventLoop loop;
  loop.start();
  Recorder rec;
  auto pipe = make_pipe();
  const int rfd = pipe.read.get();
  loop.post([&] {
    loop.watch(rfd, [&, rfd](std::uint32_t) {
      char buffer[64];
      ssize_t n;
      std::string got;
      while ((n = ::read(rfd, buffer, sizeof buffer)) > 0) got.append(buffer, static_cast<std::size_t>(n));
      CHECK(loop.on_loop_thread());
      if (!got.empty()) rec.add(got);
      if (got.find('!') != std::string::npos) loop.unwatch(rfd);
    });
    rec.add("watching");
  });
  REQUIRE(rec.wait_for_count(1));
  CHECK(rec.snapshot().size() == 1);  // nothing fires before data arrives

  REQUIRE(::write(pipe.write.get(), "hello", 5) == 5);
  REQUIRE(rec.wait_for_count(2));
  CHECK(rec.snapshot()[1] == "hello");

  REQUIRE(::write(pipe.write.get(), "bye!", 4) == 4);
  REQUIRE(rec.wait_for_count(3));
  CHECK(rec.snapshot()[2] == "bye!");

  // Unwatched: more data is not seen. A later post is a barrier.
  REQUIRE(::write(pipe.write.get(), "ignored", 7) == 7);
  loop.post([&] { rec.add("barrier"); });
  REQUIRE(rec.wait_for_count(4));
  CHECK(rec.snapshot()[3] == "barrier");
  char buffer[16];
  CHECK(::read(rfd, buffer, sizeof buffer) == 7);  // still unread in the pipe
  loop.stop();
}

TEST_CASE("watch reports EOF (hang-up) when the writer closes") {
  EventLoop loop;
  loop.start();
  Recorder rec;
  auto pipe = make_pipe();
  const int rfd = pipe.read.get();
  loop.post([&] {
    loop.watch(rfd, [&, rfd](std::uint32_t) {
      char buffer[16];
      if (::read(rfd, buffer, sizeof buffer) == 0) {
        loop.unwatch(rfd);
        rec.add("eof");
      }
    });
  });
  pipe.write.reset();
  REQUIRE(rec.wait_for_count(1));
  CHECK(rec.joined() == "eof");
  loop.stop();
}

TEST_CASE("watching the same fd twice throws") {
  EventLoop loop;
  loop.start();
  auto pipe = make_pipe();
  Recorder rec;
  loop.post([&] {
    loop.watch(pipe.read.get(), [](std::uint32_t) {});
    try {
      loop.watch(pipe.read.get(), [](std::uint32_t) {});
      rec.add("no throw");
    } catch (const std::system_error&) {
      rec.add("threw");
    }
    loop.unwatch(pipe.read.get());
  });
  REQUIRE(rec.wait_for_count(1));
  CHECK(rec.joined() == "threw");
  loop.stop();
}

TEST_CASE("stop joins the loop thread, even with a far timer pending") {
  EventLoop loop;
  loop.start();
  std::atomic<bool> fired{false};
  Recorder rec;
  loop.post([&] {
    loop.add_timer(SteadyClock::now() + std::chrono::hours(1), [&] { fired = true; });
    rec.add("armed");
  });
  REQUIRE(rec.wait_for_count(1));
  const auto before = SteadyClock::now();
  loop.stop();
  CHECK(SteadyClock::now() - before < Millis(1000));
  CHECK_FALSE(fired.load());
  // Nothing runs after stop.
  std::atomic<bool> ran{false};
  loop.post([&] { ran = true; });
  std::this_thread::sleep_for(Millis(20));
  CHECK_FALSE(ran.load());
  loop.clear();
  loop.stop();  // a second stop is harmless
}

TEST_CASE("work posted before stop still runs") {
  EventLoop loop;
  loop.start();
  std::atomic<int> ran{0};
  for (int i = 0; i < 10; ++i) loop.post([&] { ++ran; });
  loop.stop();
  CHECK(ran.load() == 10);
}

TEST_CASE("clear drops what handlers and timers hold") {
  auto token = std::make_shared<int>(7);
  std::weak_ptr<int> weak = token;
  {
    EventLoop loop;
    loop.start();
    auto pipe = make_pipe();
    Recorder rec;
    loop.post([&, held = token] {
      loop.add_timer(SteadyClock::now() + std::chrono::hours(1), [held] {});
      loop.watch(pipe.read.get(), [held](std::uint32_t) {});
      rec.add("done");
    });
    token.reset();
    REQUIRE(rec.wait_for_count(1));
    loop.stop();
    CHECK_FALSE(weak.expired());  // still held by the timer and the handler
    loop.clear();
    CHECK(weak.expired());
  }
}

TEST_CASE("destroying a running loop stops it") {
  std::atomic<bool> ran{false};
  {
    EventLoop loop;
    loop.start();
    loop.post([&] { ran = true; });
  }
  CHECK(ran.load());
}

TEST_CASE("a throwing task, timer or handler is reported and the loop keeps running") {
  EventLoop loop;
  Recorder rec;
  loop.set_error_handler([&](const std::string& what) { rec.add("error:" + what); });
  loop.start();
  auto pipe = make_pipe();
  loop.post([] { throw std::runtime_error("from task"); });
  loop.post([&] {
    loop.add_timer(SteadyClock::now(), [] { throw std::runtime_error("from timer"); });
    loop.watch(pipe.read.get(), [&](std::uint32_t) {
      char byte;
      while (::read(pipe.read.get(), &byte, 1) > 0) {
      }
      throw std::runtime_error("from handler");
    });
  });
  REQUIRE(rec.wait_for_count(2));
  REQUIRE(::write(pipe.write.get(), "x", 1) == 1);
  REQUIRE(rec.wait_for_count(3));
  loop.post([&] { rec.add("still running"); });
  REQUIRE(rec.wait_for_count(4));
  CHECK(rec.joined() == "error:from task,error:from timer,error:from handler,still running");
  loop.post([&] { loop.unwatch(pipe.read.get()); });
  loop.stop();
}
