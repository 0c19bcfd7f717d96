// Scheduler: slot accounting and the request queue, with injected time.
#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "../core/scheduler.hpp"

using snakepit::core::Millis;
using snakepit::core::RequestId;
using snakepit::core::Scheduler;
using snakepit::core::TimePoint;
using snakepit::core::WorkerKey;

namespace {

const TimePoint t0{};  // arbitrary fixed origin; nothing here reads the clock

TimePoint at(long ms) { return t0 + Millis(ms); }

int inflight(const Scheduler& s, WorkerKey key) {
  auto load = s.load(key);
  REQUIRE(load.has_value());
  return load->inflight;
}

Scheduler with_workers(std::size_t max_queue, std::vector<std::pair<WorkerKey, int>> workers) {
  Scheduler s(max_queue);
  for (auto [key, capacity] : workers) {
    s.add_worker(key, capacity);
    s.set_routable(key, true);
  }
  return s;
}

}  // namespace

TEST_CASE("workers start unroutable") {
  Scheduler s(10);
  s.add_worker(1, 1);
  CHECK(s.worker_count() == 1);
  CHECK_FALSE(s.has_free_slot());
  CHECK_FALSE(s.acquire().has_value());
  CHECK_FALSE(s.acquire_on(1));
  s.set_routable(1, true);
  CHECK(s.has_free_slot());
  CHECK(s.acquire() == std::optional<WorkerKey>(1));
}

TEST_CASE("acquire picks the least-loaded routable worker below capacity") {
  auto s = with_workers(10, {{1, 4}, {2, 4}, {3, 4}});
  REQUIRE(s.acquire_on(1));
  REQUIRE(s.acquire_on(1));
  REQUIRE(s.acquire_on(2));
  // Loads 2, 1, 0: the idle one.
  CHECK(s.acquire() == std::optional<WorkerKey>(3));
  // Loads 2, 1, 1: one of the two with 1, never the one with 2.
  auto next = s.acquire();
  REQUIRE(next.has_value());
  CHECK(*next != 1);
  CHECK(inflight(s, *next) == 2);
  // Whichever of 2/3 still has 1 goes next.
  const WorkerKey other = *next == 2 ? 3 : 2;
  CHECK(s.acquire() == std::optional<WorkerKey>(other));
  CHECK(inflight(s, 1) == 2);
  CHECK(inflight(s, 2) == 2);
  CHECK(inflight(s, 3) == 2);
}

TEST_CASE("unroutable workers are skipped") {
  auto s = with_workers(10, {{1, 2}, {2, 2}});
  s.set_routable(1, false);
  CHECK(s.acquire() == std::optional<WorkerKey>(2));
  CHECK(s.acquire() == std::optional<WorkerKey>(2));
  CHECK_FALSE(s.acquire().has_value());
  CHECK_FALSE(s.acquire_on(1));
  CHECK_FALSE(s.has_free_slot());
  CHECK(inflight(s, 1) == 0);
  s.set_routable(1, true);
  CHECK(s.acquire() == std::optional<WorkerKey>(1));
}

TEST_CASE("capacity 1 is respected") {
  auto s = with_workers(10, {{7, 1}});
  CHECK(s.acquire() == std::optional<WorkerKey>(7));
  CHECK_FALSE(s.acquire().has_value());
  CHECK_FALSE(s.acquire_on(7));
  CHECK_FALSE(s.has_free_slot());
  CHECK(s.release(7));
  CHECK(s.has_free_slot());
  CHECK(s.acquire() == std::optional<WorkerKey>(7));
}

TEST_CASE("capacity 4 is respected") {
  auto s = with_workers(10, {{7, 4}});
  for (int i = 1; i <= 4; ++i) {
    CHECK(s.acquire() == std::optional<WorkerKey>(7));
    CHECK(inflight(s, 7) == i);
  }
  CHECK_FALSE(s.acquire().has_value());
  CHECK_FALSE(s.acquire_on(7));
  CHECK(s.release(7));
  CHECK(inflight(s, 7) == 3);
  CHECK(s.acquire_on(7));
  CHECK(inflight(s, 7) == 4);
}

TEST_CASE("release never goes below zero") {
  auto s = with_workers(10, {{1, 2}});
  CHECK(s.release(1));
  CHECK(inflight(s, 1) == 0);
  CHECK(s.acquire() == std::optional<WorkerKey>(1));
  CHECK(inflight(s, 1) == 1);
}

TEST_CASE("ties rotate between equal workers") {
  auto s = with_workers(10, {{1, 1}, {2, 1}});
  std::map<WorkerKey, int> picks;
  std::optional<WorkerKey> previous;
  for (int i = 0; i < 10; ++i) {
    auto key = s.acquire();
    REQUIRE(key.has_value());
    if (previous) CHECK(*key != *previous);
    previous = key;
    ++picks[*key];
    REQUIRE(s.release(*key));
  }
  CHECK(picks[1] == 5);
  CHECK(picks[2] == 5);
}

TEST_CASE("ties rotate among three idle workers") {
  auto s = with_workers(10, {{1, 1}, {2, 1}, {3, 1}});
  std::map<WorkerKey, int> picks;
  for (int i = 0; i < 9; ++i) {
    auto key = s.acquire();
    REQUIRE(key.has_value());
    ++picks[*key];
    REQUIRE(s.release(*key));
  }
  CHECK(picks[1] == 3);
  CHECK(picks[2] == 3);
  CHECK(picks[3] == 3);
}

TEST_CASE("load-aware: 2 workers x capacity 4, 4 acquisitions land 2 and 2") {
  auto s = with_workers(10, {{1, 4}, {2, 4}});
  for (int i = 0; i < 4; ++i) REQUIRE(s.acquire().has_value());
  CHECK(inflight(s, 1) == 2);
  CHECK(inflight(s, 2) == 2);
  for (int i = 0; i < 4; ++i) REQUIRE(s.acquire().has_value());
  CHECK(inflight(s, 1) == 4);
  CHECK(inflight(s, 2) == 4);
  CHECK_FALSE(s.acquire().has_value());
}

TEST_CASE("acquire_on takes a slot on that worker only") {
  auto s = with_workers(10, {{1, 2}, {2, 2}});
  CHECK(s.acquire_on(2));
  CHECK(s.acquire_on(2));
  CHECK_FALSE(s.acquire_on(2));
  CHECK(inflight(s, 1) == 0);
  CHECK(inflight(s, 2) == 2);
  CHECK_FALSE(s.acquire_on(99));  // unknown worker
  CHECK(s.acquire() == std::optional<WorkerKey>(1));
}

TEST_CASE("remove_worker: late release returns false, the worker takes no more work") {
  auto s = with_workers(10, {{1, 1}, {2, 1}});
  REQUIRE(s.acquire_on(1));
  s.remove_worker(1);
  CHECK(s.worker_count() == 1);
  CHECK_FALSE(s.load(1).has_value());
  CHECK_FALSE(s.release(1));
  CHECK_FALSE(s.acquire_on(1));
  CHECK(s.acquire() == std::optional<WorkerKey>(2));
  CHECK_FALSE(s.acquire().has_value());
  s.remove_worker(42);  // unknown: no effect
  CHECK(s.worker_count() == 1);
}

TEST_CASE("enqueue up to max_queue, then full") {
  Scheduler s(3);
  CHECK(s.enqueue(1, at(100)) == Scheduler::EnqueueResult::queued);
  CHECK(s.enqueue(2, at(100)) == Scheduler::EnqueueResult::queued);
  CHECK(s.enqueue(3, at(100)) == Scheduler::EnqueueResult::queued);
  CHECK(s.queue_length() == 3);
  CHECK(s.enqueue(4, at(100)) == Scheduler::EnqueueResult::full);
  CHECK(s.queue_length() == 3);
  REQUIRE(s.remove_queued(2));
  CHECK(s.enqueue(4, at(100)) == Scheduler::EnqueueResult::queued);
  CHECK(s.enqueue(5, at(100)) == Scheduler::EnqueueResult::full);
}

TEST_CASE("max_queue 0 refuses everything") {
  Scheduler s(0);
  CHECK(s.enqueue(1, at(1)) == Scheduler::EnqueueResult::full);
  CHECK(s.queue_length() == 0);
}

TEST_CASE("dispatch_queued pairs the oldest requests with free slots, FIFO") {
  Scheduler s(10);
  s.add_worker(1, 1);
  s.add_worker(2, 1);
  for (RequestId id : {10, 11, 12, 13}) REQUIRE(s.enqueue(id, at(1000)) == Scheduler::EnqueueResult::queued);

  // No routable worker: nothing moves.
  CHECK(s.dispatch_queued().empty());
  CHECK(s.queue_length() == 4);

  s.set_routable(1, true);
  s.set_routable(2, true);
  auto first = s.dispatch_queued();
  REQUIRE(first.size() == 2);
  CHECK(first[0].first == 10);
  CHECK(first[1].first == 11);
  CHECK(first[0].second != first[1].second);  // one per worker
  CHECK(s.queue_length() == 2);
  CHECK(inflight(s, 1) == 1);
  CHECK(inflight(s, 2) == 1);
  CHECK(s.dispatch_queued().empty());  // no free slot left

  REQUIRE(s.release(first[1].second));
  auto second = s.dispatch_queued();
  REQUIRE(second.size() == 1);
  CHECK(second[0].first == 12);
  CHECK(second[0].second == first[1].second);
  CHECK(s.queue_length() == 1);

  REQUIRE(s.release(1));
  REQUIRE(s.release(2));
  auto third = s.dispatch_queued();
  REQUIRE(third.size() == 1);
  CHECK(third[0].first == 13);
  CHECK(s.queue_length() == 0);
  CHECK(s.dispatch_queued().empty());
}

TEST_CASE("expire removes only past-deadline entries") {
  Scheduler s(10);
  REQUIRE(s.enqueue(1, at(300)) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(2, at(100)) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(3, at(500)) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(4, at(200)) == Scheduler::EnqueueResult::queued);

  CHECK(s.expire(at(50)).empty());
  CHECK(s.queue_length() == 4);

  auto expired = s.expire(at(200));  // a deadline equal to now has passed
  CHECK(expired == std::vector<RequestId>{2, 4});
  CHECK(s.queue_length() == 2);

  CHECK(s.expire(at(299)).empty());
  CHECK(s.expire(at(10'000)) == std::vector<RequestId>{1, 3});
  CHECK(s.queue_length() == 0);
  CHECK(s.expire(at(20'000)).empty());
}

TEST_CASE("expired entries are not dispatched; the rest keep their order") {
  auto s = with_workers(10, {{1, 1}});
  REQUIRE(s.acquire_on(1));
  REQUIRE(s.enqueue(1, at(100)) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(2, at(900)) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(3, at(50)) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(4, at(900)) == Scheduler::EnqueueResult::queued);
  CHECK(s.expire(at(100)) == std::vector<RequestId>{1, 3});
  REQUIRE(s.release(1));
  auto d = s.dispatch_queued();
  REQUIRE(d.size() == 1);
  CHECK(d[0].first == 2);
}

TEST_CASE("remove_queued") {
  Scheduler s(10);
  for (RequestId id : {1, 2, 3}) REQUIRE(s.enqueue(id, at(100 * static_cast<long>(id))) == Scheduler::EnqueueResult::queued);
  CHECK(s.remove_queued(2));
  CHECK_FALSE(s.remove_queued(2));
  CHECK_FALSE(s.remove_queued(99));
  CHECK(s.queue_length() == 2);
  CHECK(s.drain_queue() == std::vector<RequestId>{1, 3});
}

TEST_CASE("next_deadline is the earliest queued deadline") {
  Scheduler s(10);
  CHECK_FALSE(s.next_deadline().has_value());
  REQUIRE(s.enqueue(1, at(300)) == Scheduler::EnqueueResult::queued);
  CHECK(s.next_deadline() == std::optional<TimePoint>(at(300)));
  REQUIRE(s.enqueue(2, at(100)) == Scheduler::EnqueueResult::queued);  // not monotonic
  REQUIRE(s.enqueue(3, at(200)) == Scheduler::EnqueueResult::queued);
  CHECK(s.next_deadline() == std::optional<TimePoint>(at(100)));
  REQUIRE(s.remove_queued(2));
  CHECK(s.next_deadline() == std::optional<TimePoint>(at(200)));
  REQUIRE(s.expire(at(250)) == std::vector<RequestId>{3});
  CHECK(s.next_deadline() == std::optional<TimePoint>(at(300)));
  REQUIRE(s.remove_queued(1));
  CHECK_FALSE(s.next_deadline().has_value());
}

TEST_CASE("drain_queue returns everything in order and empties the queue") {
  Scheduler s(10);
  CHECK(s.drain_queue().empty());
  for (RequestId id : {5, 3, 9}) REQUIRE(s.enqueue(id, at(1)) == Scheduler::EnqueueResult::queued);
  CHECK(s.drain_queue() == std::vector<RequestId>{5, 3, 9});
  CHECK(s.queue_length() == 0);
  CHECK_FALSE(s.next_deadline().has_value());
  CHECK(s.drain_queue().empty());
}

TEST_CASE("loads() reflects every worker") {
  auto s = with_workers(10, {{1, 2}, {2, 3}});
  s.set_routable(2, false);
  REQUIRE(s.acquire_on(1));
  const auto& loads = s.loads();
  REQUIRE(loads.size() == 2);
  CHECK(loads[0].key == 1);
  CHECK(loads[0].inflight == 1);
  CHECK(loads[0].capacity == 2);
  CHECK(loads[0].routable);
  CHECK(loads[1].key == 2);
  CHECK(loads[1].capacity == 3);
  CHECK_FALSE(loads[1].routable);
}

TEST_CASE("a request for one worker waits for it without holding up the rest") {
  auto s = with_workers(10, {{1, 1}, {2, 1}});
  REQUIRE(s.acquire_on(2));  // worker 2 busy
  REQUIRE(s.enqueue(10, at(1000), 2) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(11, at(1000)) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(12, at(1000), 2) == Scheduler::EnqueueResult::queued);

  auto first = s.dispatch_queued();
  REQUIRE(first.size() == 1);
  CHECK(first[0] == std::pair<RequestId, WorkerKey>{11, 1});
  CHECK(s.queue_length() == 2);

  REQUIRE(s.release(1));
  CHECK(s.dispatch_queued().empty());  // a free worker 1 does not serve requests for 2
  REQUIRE(s.release(2));
  auto second = s.dispatch_queued();
  REQUIRE(second.size() == 1);
  CHECK(second[0] == std::pair<RequestId, WorkerKey>{10, 2});  // oldest first
  REQUIRE(s.release(2));
  auto third = s.dispatch_queued();
  REQUIRE(third.size() == 1);
  CHECK(third[0] == std::pair<RequestId, WorkerKey>{12, 2});
  CHECK(s.queue_length() == 0);
}

TEST_CASE("remove_required drops what only a gone worker could serve") {
  Scheduler s(10);
  REQUIRE(s.enqueue(1, at(100), 7) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(2, at(100)) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(3, at(100), 8) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(4, at(100), 7) == Scheduler::EnqueueResult::queued);
  CHECK(s.remove_required(7) == std::vector<RequestId>{1, 4});
  CHECK(s.remove_required(7).empty());
  CHECK(s.drain_queue() == std::vector<RequestId>{2, 3});
}

TEST_CASE("a group's queued requests follow the first one to the worker it lands on") {
  auto s = with_workers(10, {{1, 1}, {2, 1}});
  REQUIRE(s.acquire_on(1));
  REQUIRE(s.acquire_on(2));  // both busy: everything queues
  REQUIRE(s.enqueue(10, at(1000), 0, 77) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(11, at(1000), 0, 77) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(12, at(1000)) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(13, at(1000), 0, 77) == Scheduler::EnqueueResult::queued);

  REQUIRE(s.release(2));
  auto first = s.dispatch_queued();
  REQUIRE(first.size() == 1);
  CHECK(first[0] == std::pair<RequestId, WorkerKey>{10, 2});

  // Worker 1 frees up first, but 11 and 13 now wait for worker 2; 12 takes 1.
  REQUIRE(s.release(1));
  auto second = s.dispatch_queued();
  REQUIRE(second.size() == 1);
  CHECK(second[0] == std::pair<RequestId, WorkerKey>{12, 1});
  REQUIRE(s.release(1));
  CHECK(s.dispatch_queued().empty());

  REQUIRE(s.release(2));
  auto third = s.dispatch_queued();
  REQUIRE(third.size() == 1);
  CHECK(third[0] == std::pair<RequestId, WorkerKey>{11, 2});
  REQUIRE(s.release(2));
  auto fourth = s.dispatch_queued();
  REQUIRE(fourth.size() == 1);
  CHECK(fourth[0] == std::pair<RequestId, WorkerKey>{13, 2});
}

TEST_CASE("group_waiting is true until the group's first request is dispatched") {
  auto s = with_workers(10, {{1, 1}});
  REQUIRE(s.acquire_on(1));
  CHECK_FALSE(s.group_waiting(9));
  REQUIRE(s.enqueue(10, at(1000), 0, 9) == Scheduler::EnqueueResult::queued);
  CHECK(s.group_waiting(9));
  CHECK_FALSE(s.group_waiting(8));
  CHECK_FALSE(s.group_waiting(0));
  REQUIRE(s.release(1));
  REQUIRE(s.dispatch_queued().size() == 1);
  CHECK_FALSE(s.group_waiting(9));
}

TEST_CASE("two free workers in one dispatch round still keep a group together") {
  auto s = with_workers(10, {{1, 1}, {2, 1}});
  REQUIRE(s.enqueue(10, at(1000), 0, 5) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(11, at(1000), 0, 5) == Scheduler::EnqueueResult::queued);
  auto round = s.dispatch_queued();
  REQUIRE(round.size() == 1);  // 11 waits for 10's worker even though the other is free
  CHECK(round[0].first == 10);
  REQUIRE(s.release(round[0].second));
  auto next = s.dispatch_queued();
  REQUIRE(next.size() == 1);
  CHECK(next[0] == std::pair<RequestId, WorkerKey>{11, round[0].second});
}

TEST_CASE("retarget_required hands a worker's waiting requests to its replacement") {
  auto s = with_workers(10, {{1, 1}, {2, 1}, {3, 1}});
  REQUIRE(s.acquire_on(1));
  REQUIRE(s.enqueue(10, at(1000), 1) == Scheduler::EnqueueResult::queued);
  REQUIRE(s.enqueue(11, at(1000), 2) == Scheduler::EnqueueResult::queued);
  s.retarget_required(1, 3);
  auto round = s.dispatch_queued();
  REQUIRE(round.size() == 2);
  CHECK(round[0] == std::pair<RequestId, WorkerKey>{10, 3});
  CHECK(round[1] == std::pair<RequestId, WorkerKey>{11, 2});
  CHECK(s.remove_required(1).empty());
}
