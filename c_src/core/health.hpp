// Health decisions for one worker: heartbeats, the probe after a refused
// call, and calls whose callers gave up while the worker still runs them.
// Pure: the pool passes the worker's facts and the time in and carries out
// the action it gets back (ping, probe, kill or nothing).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "scheduler.hpp"
#include "types.hpp"

namespace snakepit::core {

enum class HealthAction { nothing, ping, probe, kill };

struct HealthRules {
  Millis ping_interval{2000};
  Millis initial_delay{0};  // before a new worker's first ping
  int max_missed = 3;       // heartbeats missed in a row before a timeout
  bool dependent = true;    // a timeout kills the worker (else it is only reported)
  Millis overrun_grace{5000};
};

// A worker's health: one flag and the heartbeats it missed in a row.
struct Health {
  // It refused a call (UNAVAILABLE): out of routing until a probe answers.
  bool suspect = false;
  int missed = 0;
};

// How long after it got ready a worker gets its first ping.
Millis first_ping_delay(const HealthRules& rules);

struct HeartbeatVerdict {
  HealthAction action = HealthAction::nothing;  // kill, or nothing
  bool timed_out = false;                       // report a heartbeat timeout
  int missed = 0;                               // how many in a row, when timed out
};
HeartbeatVerdict heartbeat_answered(Health& health, bool ok, const HealthRules& rules);

// A call was refused: probe once (wait for the connection to come back).
HealthAction call_refused(Health& health);
// The probe's answer: back in service, or kill a dead or wedged worker.
HealthAction probe_answered(Health& health, bool ok);

// A call answered to its caller (timed out, cancelled) that the worker may
// still be running; it keeps its slot until the worker is done with it.
struct AbandonedCall {
  TimePoint kill_at;   // still running then: the worker is hung
  TimePoint deadline;  // the caller's
  std::string tool;
};
AbandonedCall abandon(TimePoint now, TimePoint deadline, std::string tool, const HealthRules& rules);

struct OverrunVerdict {
  // kill: a call overran its deadline by the grace; ping: ask again what
  // it still runs; nothing: no call left to watch.
  HealthAction action = HealthAction::nothing;
  std::vector<RequestId> finished;  // done on the worker: their slots are free
  std::string hung_tool;            // when kill
  Millis overrun{0};                // when kill: how far past its deadline
};
// `running`: the worker's answer, nullopt when it did not answer (then
// every call counts as still running).
OverrunVerdict check_abandoned(const std::map<RequestId, AbandonedCall>& abandoned,
                               const std::optional<std::vector<RequestId>>& running, TimePoint now);

}  // namespace snakepit::core
