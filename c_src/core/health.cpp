// Health decisions: heartbeat counting, the UNAVAILABLE probe, overruns.
#include "health.hpp"

#include <algorithm>

namespace snakepit::core {

Millis first_ping_delay(const HealthRules& rules) { return rules.initial_delay + rules.ping_interval; }

HeartbeatVerdict heartbeat_answered(Health& health, bool ok, const HealthRules& rules) {
  HeartbeatVerdict verdict;
  if (ok) {
    health.missed = 0;
    return verdict;
  }
  if (++health.missed < rules.max_missed) return verdict;
  verdict.timed_out = true;
  verdict.missed = health.missed;
  health.missed = 0;
  // Its exit fails what it was running and brings a replacement.
  if (rules.dependent) verdict.action = HealthAction::kill;
  return verdict;
}

HealthAction call_refused(Health& health) {
  if (health.suspect) return HealthAction::nothing;  // a probe is out already
  health.suspect = true;
  return HealthAction::probe;
}

HealthAction probe_answered(Health& health, bool ok) {
  health.suspect = false;
  return ok ? HealthAction::nothing : HealthAction::kill;
}

AbandonedCall abandon(TimePoint now, TimePoint deadline, std::string tool, const HealthRules& rules) {
  return AbandonedCall{std::max(now, deadline) + rules.overrun_grace, deadline, std::move(tool)};
}

OverrunVerdict check_abandoned(const std::map<RequestId, AbandonedCall>& abandoned,
                               const std::optional<std::vector<RequestId>>& running, TimePoint now) {
  OverrunVerdict verdict;
  bool watching = false;
  for (const auto& [id, call] : abandoned) {
    const bool still_running = !running || std::find(running->begin(), running->end(), id) != running->end();
    if (!still_running) {
      verdict.finished.push_back(id);
      continue;
    }
    watching = true;
    if (now >= call.kill_at && verdict.action != HealthAction::kill) {
      verdict.action = HealthAction::kill;
      verdict.hung_tool = call.tool;
      verdict.overrun = std::chrono::duration_cast<Millis>(now - call.deadline);
    }
  }
  if (verdict.action != HealthAction::kill && watching) verdict.action = HealthAction::ping;
  return verdict;
}

}  // namespace snakepit::core
