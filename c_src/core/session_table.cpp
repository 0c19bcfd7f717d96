// SessionTable: session to worker bindings with their idle expiry.
#include "session_table.hpp"

namespace snakepit::core {

const SessionTable::Binding* SessionTable::lookup(const std::string& session_id, TimePoint now) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return nullptr;
  it->second.last_used = now;
  return &it->second.binding;
}

const SessionTable::Binding* SessionTable::peek(const std::string& session_id) const {
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? nullptr : &it->second.binding;
}

bool SessionTable::bind(const std::string& session_id, WorkerKey worker, const std::string& worker_id,
                        TimePoint now) {
  // The entry is built only when the session is new: a bound session's
  // calls copy nothing.
  auto [it, inserted] = sessions_.try_emplace(session_id);
  if (inserted) it->second = Session{Binding{worker, worker_id}, now};
  return inserted;
}

std::size_t SessionTable::move(WorkerKey from, WorkerKey to, const std::string& to_id) {
  std::size_t moved = 0;
  for (auto& [session_id, session] : sessions_) {
    if (session.binding.worker != from) continue;
    session.binding = Binding{to, to_id};
    ++moved;
  }
  return moved;
}

std::size_t SessionTable::sweep(TimePoint now, Millis ttl) {
  const auto oldest = now - ttl;
  return std::erase_if(sessions_, [&](const auto& entry) { return entry.second.last_used < oldest; });
}

}  // namespace snakepit::core
