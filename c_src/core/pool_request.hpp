// One request inside the pool, from submit to its one outcome; shared by the
// pool, the worker running it and the transport's completion.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "scheduler.hpp"
#include "transport.hpp"
#include "types.hpp"

namespace snakepit::core {

struct PoolRequest {
  RequestId id = 0;
  CallRequest call;
  std::unique_ptr<Responder> responder;
  TimePoint submitted;
  WorkerKey worker = 0;
  std::string worker_id;
  std::atomic<bool> finished{false};
  // Its worker's exit took it (pool lock held): that exit answers it, with
  // the cause, even if its transport error arrives first.
  bool taken_by_exit = false;

  std::mutex handle_mutex;
  std::shared_ptr<CallHandle> handle;
  bool cancel_requested = false;

  TimePoint deadline() const { return submitted + call.timeout; }

  // The one place an outcome leaves; later attempts are dropped. True when
  // this one was delivered. `before` runs first, so whoever sees the
  // outcome also sees what it did (the error count).
  template <class Before>
  bool finish(Outcome&& outcome, Before&& before) {
    if (finished.exchange(true)) return false;
    if (outcome.worker_id.empty()) outcome.worker_id = worker_id;
    before(outcome);
    responder->deliver(std::move(outcome));
    return true;
  }
};

}  // namespace snakepit::core
