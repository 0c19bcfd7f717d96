// The facts of the wire contract (proto/snakepit_bridge.proto) that the
// generated stubs do not carry: the type URLs of values, the fields of
// the Python error object and the request metadata keys. Python's copy is
// snakepit_bridge/wire.py; test/python/test_wire_facts.py reads this file
// and checks the two agree.
#pragma once

#include <string_view>

namespace snakepit::wire {

// google.protobuf.Any.type_url of a value carried as JSON text.
inline constexpr std::string_view kJsonTypeUrl = "type.googleapis.com/snakepit.json";
// google.protobuf.Any.type_url of raw bytes; a ToolChunk of raw bytes
// carries it as metadata[kChunkTypeKey].
inline constexpr std::string_view kBinaryTypeUrl = "type.googleapis.com/snakepit.binary";
inline constexpr std::string_view kChunkTypeKey = "type_url";

// The Python error object, a JSON object of three strings: in
// ExecuteToolResponse.error_message, in the status details of a failed
// stream (gRPC status UNKNOWN) and, with "status":"error", in a worker's
// startup line.
inline constexpr std::string_view kErrorTypeField = "type";
inline constexpr std::string_view kErrorMessageField = "message";
inline constexpr std::string_view kErrorTracebackField = "traceback";

// ExecuteToolRequest.metadata keys (upstream's names): the call's
// correlation id, and kThreadSensitiveValue when the tool must run on the
// worker's main thread.
inline constexpr std::string_view kCorrelationIdKey = "correlation_id";
inline constexpr std::string_view kThreadSensitiveKey = "thread_sensitive";
inline constexpr std::string_view kThreadSensitiveValue = "true";

}  // namespace snakepit::wire
