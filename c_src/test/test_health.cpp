// Health decisions: heartbeats, the UNAVAILABLE probe and overrunning
// calls, with injected time and no sleeping.
#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <vector>

#include "../core/health.hpp"

using namespace snakepit::core;

namespace {
const TimePoint t0{};
TimePoint at(long ms) { return t0 + Millis(ms); }

HealthRules rules(int max_missed = 3, bool dependent = true) {
  HealthRules r;
  r.ping_interval = Millis(100);
  r.initial_delay = Millis(400);
  r.max_missed = max_missed;
  r.dependent = dependent;
  r.overrun_grace = Millis(150);
  return r;
}
}  // namespace

TEST_CASE("health: the first ping waits for the initial delay and one interval") {
  CHECK(first_ping_delay(rules()) == Millis(500));
}

TEST_CASE("health: max_missed failed heartbeats in a row time out once, then count afresh") {
  Health health;
  CHECK_FALSE(heartbeat_answered(health, false, rules()).timed_out);
  CHECK_FALSE(heartbeat_answered(health, false, rules()).timed_out);
  auto verdict = heartbeat_answered(health, false, rules());
  CHECK(verdict.timed_out);
  CHECK(verdict.missed == 3);
  CHECK(verdict.action == HealthAction::kill);
  CHECK(health.missed == 0);
  CHECK_FALSE(heartbeat_answered(health, false, rules()).timed_out);
}

TEST_CASE("health: an answered heartbeat resets the count") {
  Health health;
  heartbeat_answered(health, false, rules());
  heartbeat_answered(health, false, rules());
  auto verdict = heartbeat_answered(health, true, rules());
  CHECK(verdict.action == HealthAction::nothing);
  CHECK(health.missed == 0);
  CHECK_FALSE(heartbeat_answered(health, false, rules()).timed_out);
}

TEST_CASE("health: an independent worker's timeout is reported, not killed") {
  Health health;
  auto verdict = heartbeat_answered(health, false, rules(1, false));
  CHECK(verdict.timed_out);
  CHECK(verdict.missed == 1);
  CHECK(verdict.action == HealthAction::nothing);
}

TEST_CASE("health: a refused call probes once; the probe's answer decides") {
  Health health;
  CHECK(call_refused(health) == HealthAction::probe);
  CHECK(health.suspect);
  CHECK(call_refused(health) == HealthAction::nothing);  // a probe is out already
  CHECK(probe_answered(health, true) == HealthAction::nothing);
  CHECK_FALSE(health.suspect);
  CHECK(call_refused(health) == HealthAction::probe);
  CHECK(probe_answered(health, false) == HealthAction::kill);
}

TEST_CASE("health: an abandoned call may run until its deadline plus the grace") {
  // Given up before its deadline (cancelled): the deadline counts.
  CHECK(abandon(at(100), at(1000), "t", rules()).kill_at == at(1150));
  // Given up at its deadline or after: from now.
  CHECK(abandon(at(1200), at(1000), "t", rules()).kill_at == at(1350));
}

TEST_CASE("health: calls the worker no longer runs free their slots") {
  std::map<RequestId, AbandonedCall> abandoned{{1, abandon(at(0), at(0), "a", rules())},
                                               {2, abandon(at(0), at(0), "b", rules())}};
  auto verdict = check_abandoned(abandoned, std::vector<RequestId>{2}, at(10));
  CHECK(verdict.finished == std::vector<RequestId>{1});
  CHECK(verdict.action == HealthAction::ping);  // 2 still runs: ask again
  verdict = check_abandoned(abandoned, std::vector<RequestId>{}, at(10));
  CHECK(verdict.finished == std::vector<RequestId>{1, 2});
  CHECK(verdict.action == HealthAction::nothing);
}

TEST_CASE("health: a call still running past its deadline plus the grace kills the worker") {
  std::map<RequestId, AbandonedCall> abandoned{{1, abandon(at(0), at(50), "stuck", rules())},
                                               {2, abandon(at(0), at(500), "later", rules())}};
  CHECK(check_abandoned(abandoned, std::vector<RequestId>{1, 2}, at(199)).action == HealthAction::ping);
  auto verdict = check_abandoned(abandoned, std::vector<RequestId>{1, 2}, at(200));
  CHECK(verdict.action == HealthAction::kill);
  CHECK(verdict.hung_tool == "stuck");
  CHECK(verdict.overrun == Millis(150));
  CHECK(verdict.finished.empty());
}

TEST_CASE("health: no answer from the worker counts every call as still running") {
  std::map<RequestId, AbandonedCall> abandoned{{1, abandon(at(0), at(0), "t", rules())}};
  auto verdict = check_abandoned(abandoned, std::nullopt, at(10));
  CHECK(verdict.finished.empty());
  CHECK(verdict.action == HealthAction::ping);
  CHECK(check_abandoned(abandoned, std::nullopt, at(150)).action == HealthAction::kill);
}
