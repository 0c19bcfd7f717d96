// Session affinity bookkeeping: which worker each session is bound to and
// when it was last used. Pure: no locks, no clock, no I/O; the pool holds
// its lock around every call and passes the time in.
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>

#include "scheduler.hpp"
#include "types.hpp"

namespace snakepit::core {

class SessionTable {
 public:
  struct Binding {
    WorkerKey worker = 0;
    std::string worker_id;
  };

  // The session's binding, if any, marked used at `now`. Pointers stay
  // valid until the table is next changed; callers hold the pool lock, so
  // nothing is copied on the hot path.
  const Binding* lookup(const std::string& session_id, TimePoint now);
  // The binding without touching it.
  const Binding* peek(const std::string& session_id) const;
  // A session's first call binds it to the worker that runs it; a bound
  // session keeps its worker. True when this call bound it.
  bool bind(const std::string& session_id, WorkerKey worker, const std::string& worker_id, TimePoint now);
  // Every session of `from` follows its planned replacement `to`.
  std::size_t move(WorkerKey from, WorkerKey to, const std::string& to_id);
  // Forgets sessions unused for `ttl` or longer; returns how many.
  std::size_t sweep(TimePoint now, Millis ttl);
  void drop(const std::string& session_id) { sessions_.erase(session_id); }
  std::size_t size() const { return sessions_.size(); }

 private:
  struct Session {
    Binding binding;
    TimePoint last_used;
  };
  std::unordered_map<std::string, Session> sessions_;
};

}  // namespace snakepit::core
