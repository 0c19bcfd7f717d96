// CallerMonitors (caller_monitors.hpp): the caller table and its monitors.
#include "caller_monitors.hpp"

#include <algorithm>

namespace snakepit::nif {

void CallerMonitors::add(ErlNifEnv* env, void* resource, const ErlNifPid& caller, core::RequestId id) {
  std::lock_guard lock(mutex_);
  auto found = callers_.find(caller);
  if (found == callers_.end()) {
    // Fails for a caller already dead (killed while a dirty NIF ran for
    // it): nothing waits for its calls, which are then not tracked.
    if (enif_monitor_process(env, resource, &caller, nullptr) != 0) return;
    found = callers_.emplace(caller, std::vector<core::RequestId>{}).first;
  }
  found->second.push_back(id);
}

void CallerMonitors::remove(const ErlNifPid& caller, core::RequestId id) {
  std::lock_guard lock(mutex_);
  auto found = callers_.find(caller);
  if (found == callers_.end()) return;
  auto& calls = found->second;
  if (auto call = std::find(calls.begin(), calls.end(), id); call != calls.end()) {
    *call = calls.back();
    calls.pop_back();
  }
}

std::vector<core::RequestId> CallerMonitors::down(const ErlNifPid& caller) {
  std::lock_guard lock(mutex_);
  auto found = callers_.find(caller);
  if (found == callers_.end()) return {};
  auto calls = std::move(found->second);
  callers_.erase(found);
  return calls;
}

}  // namespace snakepit::nif
