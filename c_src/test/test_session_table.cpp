// SessionTable: lookup, bind, move and sweep, with injected time.
#include <doctest/doctest.h>

#include "../core/session_table.hpp"

using snakepit::core::Millis;
using snakepit::core::SessionTable;
using snakepit::core::TimePoint;

namespace {
const TimePoint t0{};  // arbitrary fixed origin; nothing here reads the clock
TimePoint at(long ms) { return t0 + Millis(ms); }
}  // namespace

TEST_CASE("sessions: an unknown session has no binding") {
  SessionTable table;
  CHECK(table.lookup("s1", at(0)) == nullptr);
  CHECK(table.peek("s1") == nullptr);
  CHECK(table.size() == 0);
}

TEST_CASE("sessions: the first bind wins; later binds keep the worker") {
  SessionTable table;
  CHECK(table.bind("s1", 1, "w1", at(0)));
  CHECK_FALSE(table.bind("s1", 2, "w2", at(5)));
  auto binding = table.lookup("s1", at(10));
  REQUIRE(binding != nullptr);
  CHECK(binding->worker == 1);
  CHECK(binding->worker_id == "w1");
  CHECK(table.size() == 1);
}

TEST_CASE("sessions: move rebinds every session of a worker to its successor") {
  SessionTable table;
  table.bind("a", 1, "w1", at(0));
  table.bind("b", 1, "w1", at(0));
  table.bind("c", 2, "w2", at(0));
  CHECK(table.move(1, 3, "w3") == 2);
  CHECK(table.peek("a")->worker == 3);
  CHECK(table.peek("b")->worker_id == "w3");
  CHECK(table.peek("c")->worker == 2);
  CHECK(table.move(1, 4, "w4") == 0);
}

TEST_CASE("sessions: sweep forgets sessions idle for the ttl, lookup keeps one alive") {
  SessionTable table;
  table.bind("idle", 1, "w1", at(0));
  table.bind("used", 1, "w1", at(0));
  REQUIRE(table.lookup("used", at(900)) != nullptr);
  CHECK(table.sweep(at(999), Millis(1000)) == 0);  // idle for 999 ms: kept
  CHECK(table.sweep(at(1001), Millis(1000)) == 1);
  CHECK(table.peek("idle") == nullptr);
  CHECK(table.peek("used") != nullptr);
  // peek does not count as use.
  table.peek("used");
  CHECK(table.sweep(at(1901), Millis(1000)) == 1);
  CHECK(table.size() == 0);
}

TEST_CASE("sessions: drop forgets one session") {
  SessionTable table;
  table.bind("a", 1, "w1", at(0));
  table.bind("b", 1, "w1", at(0));
  table.drop("a");
  table.drop("missing");
  CHECK(table.peek("a") == nullptr);
  CHECK(table.size() == 1);
}
