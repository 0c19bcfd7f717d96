// ElixirToolServer (elixir_tool_server.hpp): the async gRPC service Python
// workers call for Elixir tools and telemetry, its parked calls and their
// replies.
#include "elixir_tool_server.hpp"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "../core/wire.hpp"
#include "snakepit_bridge.grpc.pb.h"

namespace snakepit::transport {
namespace pb = ::snakepit::bridge;

namespace {
constexpr const char* kTakerGone = "the Elixir tool registry stopped before answering";
// Bounds one batch's Elixir message; the bridge sends at most 1000.
constexpr int kMaxTelemetryEvents = 5000;

TelemetryEventData::Value telemetry_value(const pb::TelemetryValue& value) {
  switch (value.value_case()) {
    case pb::TelemetryValue::kIntValue:
      return value.int_value();
    case pb::TelemetryValue::kFloatValue:
      return value.float_value();
    default:
      return value.string_value();
  }
}

std::unique_ptr<TelemetryBatchData> telemetry_batch(const pb::TelemetryBatch& request) {
  auto batch = std::make_unique<TelemetryBatchData>();
  batch->worker_id = request.worker_id();
  batch->pool_name = request.pool_name();
  batch->python_pid = request.python_pid();
  batch->dropped = request.dropped();
  batch->events.reserve(static_cast<std::size_t>(request.events_size()));
  for (const auto& event : request.events()) {
    auto& out = batch->events.emplace_back();
    out.event_parts.assign(event.event_parts().begin(), event.event_parts().end());
    for (const auto& [key, value] : event.measurements()) out.measurements.emplace_back(key, telemetry_value(value));
    for (const auto& [key, value] : event.metadata()) out.metadata.emplace_back(key, value);
    out.timestamp_ns = event.timestamp_ns();
    out.correlation_id = event.correlation_id();
  }
  return batch;
}
}  // namespace

struct ElixirToolServer::Impl final : pb::BridgeService::CallbackService {
  struct Pending {
    grpc::ServerUnaryReactor* reactor;
    std::variant<pb::ExecuteElixirToolResponse*, pb::GetExposedElixirToolsResponse*, pb::TelemetryBatchResponse*>
        response;
    std::uint64_t token = 0;  // who it was handed to; 0 until dispatched
  };

  Dispatch dispatch;
  std::atomic<std::uint64_t> next_id{1};
  std::mutex mutex;
  std::unordered_map<std::uint64_t, Pending> pending;
  std::unordered_set<std::uint64_t> gone_tokens;  // takers that died
  std::unique_ptr<grpc::Server> server;

  std::optional<Pending> take(std::uint64_t id) {
    std::lock_guard lock(mutex);
    auto it = pending.find(id);
    if (it == pending.end()) return std::nullopt;
    Pending found = it->second;
    pending.erase(it);
    return found;
  }

  grpc::ServerUnaryReactor* park(grpc::CallbackServerContext* context, ElixirToolCall&& call, Pending pending_call) {
    auto* reactor = context->DefaultReactor();
    pending_call.reactor = reactor;
    const auto id = call.id;
    {
      std::lock_guard lock(mutex);
      pending.emplace(id, pending_call);
    }
    const auto token = dispatch(std::move(call));
    if (!token) {
      if (take(id))
        reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the Elixir tool registry is not running"));
      return reactor;
    }
    // Its taker may have died between the hand-over and here.
    bool gone = false;
    {
      std::lock_guard lock(mutex);
      auto it = pending.find(id);
      if (it == pending.end()) return reactor;  // answered already
      if (gone_tokens.count(*token) != 0) {
        pending.erase(it);
        gone = true;
      } else {
        it->second.token = *token;
      }
    }
    if (gone) reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, kTakerGone));
    return reactor;
  }

  grpc::ServerUnaryReactor* ExecuteElixirTool(grpc::CallbackServerContext* context,
                                              const pb::ExecuteElixirToolRequest* request,
                                              pb::ExecuteElixirToolResponse* response) override {
    ElixirToolCall call;
    call.id = next_id++;
    call.kind = ElixirToolCall::Kind::execute;
    call.session_id = request->session_id();
    call.tool = request->tool_name();
    for (const auto& [name, any] : request->parameters()) call.params_json.emplace_back(name, any.value());
    return park(context, std::move(call), Pending{nullptr, response});
  }

  grpc::ServerUnaryReactor* GetExposedElixirTools(grpc::CallbackServerContext* context,
                                                  const pb::GetExposedElixirToolsRequest* request,
                                                  pb::GetExposedElixirToolsResponse* response) override {
    ElixirToolCall call;
    call.id = next_id++;
    call.kind = ElixirToolCall::Kind::list;
    call.session_id = request->session_id();
    return park(context, std::move(call), Pending{nullptr, response});
  }

  grpc::ServerUnaryReactor* EmitTelemetry(grpc::CallbackServerContext* context, const pb::TelemetryBatch* request,
                                          pb::TelemetryBatchResponse* response) override {
    if (request->events_size() > kMaxTelemetryEvents) {
      auto* reactor = context->DefaultReactor();
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "telemetry batch too large"));
      return reactor;
    }
    ElixirToolCall call;
    call.id = next_id++;
    call.kind = ElixirToolCall::Kind::telemetry;
    call.telemetry = telemetry_batch(*request);
    return park(context, std::move(call), Pending{nullptr, response});
  }
};

ElixirToolServer::ElixirToolServer(const std::string& socket_path, Dispatch dispatch)
    : socket_path_(socket_path), impl_(std::make_unique<Impl>()) {
  impl_->dispatch = std::move(dispatch);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(fmt::format("unix:{}", socket_path), grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  builder.RegisterService(impl_.get());
  impl_->server = builder.BuildAndStart();
  if (!impl_->server) throw std::runtime_error(fmt::format("cannot listen on unix:{}", socket_path));
}

ElixirToolServer::~ElixirToolServer() {
  if (impl_->server) impl_->server->Shutdown();
}

void ElixirToolServer::reply_execute(std::uint64_t id, bool ok, std::string result_json_or_message,
                                     bool not_found) {
  auto pending = impl_->take(id);
  if (!pending) return;
  if (std::holds_alternative<pb::TelemetryBatchResponse*>(pending->response)) {
    return pending->reactor->Finish(ok ? grpc::Status::OK
                                       : grpc::Status(grpc::StatusCode::UNAVAILABLE, result_json_or_message));
  }
  auto** response = std::get_if<pb::ExecuteElixirToolResponse*>(&pending->response);
  if (response == nullptr) return pending->reactor->Finish(grpc::Status(grpc::StatusCode::INTERNAL, "wrong reply kind"));
  (*response)->set_success(ok);
  if (ok) {
    (*response)->mutable_result()->set_type_url(wire::kJsonTypeUrl.data(), wire::kJsonTypeUrl.size());
    (*response)->mutable_result()->set_value(std::move(result_json_or_message));
  } else {
    (*response)->set_error_message(std::move(result_json_or_message));
    if (not_found) (*(*response)->mutable_metadata())["error_kind"] = "not_found";
  }
  pending->reactor->Finish(grpc::Status::OK);
}

void ElixirToolServer::reply_list(std::uint64_t id, std::vector<ElixirToolSpec> tools) {
  auto pending = impl_->take(id);
  if (!pending) return;
  auto** response = std::get_if<pb::GetExposedElixirToolsResponse*>(&pending->response);
  if (response == nullptr) return pending->reactor->Finish(grpc::Status(grpc::StatusCode::INTERNAL, "wrong reply kind"));
  for (auto& tool : tools) {
    auto* spec = (*response)->add_tools();
    spec->set_name(std::move(tool.name));
    spec->set_description(std::move(tool.description));
  }
  pending->reactor->Finish(grpc::Status::OK);
}


std::size_t ElixirToolServer::fail_pending(std::uint64_t token, const std::string& message) {
  std::vector<grpc::ServerUnaryReactor*> reactors;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->gone_tokens.insert(token);
    for (auto it = impl_->pending.begin(); it != impl_->pending.end();) {
      if (it->second.token == token) {
        reactors.push_back(it->second.reactor);
        it = impl_->pending.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto* reactor : reactors) reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, message));
  return reactors.size();
}


}  // namespace snakepit::transport
