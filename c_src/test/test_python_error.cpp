// core::parse_python_error: the worker's {"type","message","traceback"} object.
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "../core/python_error.hpp"

using snakepit::core::Error;
using snakepit::core::parse_python_error;

namespace {

Error filled() {
  Error error;
  error.reason = "python_error";
  error.message = "old message";
  error.python_type = "OldType";
  error.traceback = "old traceback";
  error.worker_id = "w1";
  return error;
}

}  // namespace

TEST_CASE("parse_python_error reads the three fields") {
  Error error;
  parse_python_error(R"({"type":"ValueError","message":"bad \"x\"","traceback":"Traceback\n  line 1"})", error);
  CHECK(error.python_type == "ValueError");
  CHECK(error.message == "bad \"x\"");
  CHECK(error.traceback == "Traceback\n  line 1");
}

TEST_CASE("parse_python_error leaves absent and non-string fields as they were") {
  Error error = filled();
  parse_python_error(R"({"message":"new","type":null,"traceback":["x"],"other":1})", error);
  CHECK(error.message == "new");
  CHECK(error.python_type == "OldType");
  CHECK(error.traceback == "old traceback");
  CHECK(error.reason == "python_error");
  CHECK(error.worker_id == "w1");
}

TEST_CASE("parse_python_error takes the first of duplicate keys") {
  Error error;
  parse_python_error(R"({"type":"First","type":"Second"})", error);
  CHECK(error.python_type == "First");
}

TEST_CASE("parse_python_error keeps text that is not a JSON object whole, as the message") {
  for (std::string_view text : {"", "not json", "[1,2]", "\"just a string\"", "{\"message\":", "{\"message\":\"\\ud800\"}"}) {
    CAPTURE(text);
    Error error = filled();
    parse_python_error(text, error);
    CHECK(error.message == text);
    CHECK(error.python_type == "OldType");
    CHECK(error.traceback == "old traceback");
  }
}
