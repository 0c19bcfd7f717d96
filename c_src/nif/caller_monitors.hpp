// A pool's callers and their calls in flight, one monitor per caller
// process: a caller's death cancels its calls. The monitor is set at a
// process's first call and kept until the process dies; set and removed
// around every call it cost two signals to the caller per call (a third of
// the BEAM-side cost of handing a reply over, in a profile of `ping`).
#pragma once

#include <erl_nif.h>

#include <map>
#include <mutex>
#include <vector>

#include "../core/scheduler.hpp"

namespace snakepit::nif {

class CallerMonitors {
 public:
  // On the caller's scheduler (`env` is its NIF env): call `id` of
  // `caller` is in flight; `resource` carries the monitor.
  void add(ErlNifEnv* env, void* resource, const ErlNifPid& caller, core::RequestId id);
  // Any thread: call `id` of `caller` has ended.
  void remove(const ErlNifPid& caller, core::RequestId id);
  // The caller died (its monitor fired): its calls still in flight.
  std::vector<core::RequestId> down(const ErlNifPid& caller);

 private:
  struct PidLess {
    bool operator()(const ErlNifPid& a, const ErlNifPid& b) const {
      return enif_compare_pids(&a, &b) < 0;
    }
  };

  std::mutex mutex_;
  // A caller with no call in flight keeps its entry (and its monitor).
  std::map<ErlNifPid, std::vector<core::RequestId>, PidLess> callers_;
};

}  // namespace snakepit::nif
