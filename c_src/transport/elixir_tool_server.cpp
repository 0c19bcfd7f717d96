// ElixirToolServer (elixir_tool_server.hpp): the async gRPC service Python
// workers call for Elixir tools and telemetry, on the NIF's queue thread;
// its parked calls and their replies.
#include "elixir_tool_server.hpp"

#include <fmt/format.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "../core/wire.hpp"
#include "queue_thread.hpp"
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

// The methods Python calls are served async on the queue thread; every
// other method of the service is generic, answered UNIMPLEMENTED by
// UnknownMethodCall (a synchronous method would need gRPC's own threads).
using Service = pb::BridgeService::WithAsyncMethod_ExecuteElixirTool<
    pb::BridgeService::WithAsyncMethod_GetExposedElixirTools<pb::BridgeService::WithAsyncMethod_EmitTelemetry<
        pb::BridgeService::WithGenericMethod_Ping<pb::BridgeService::WithGenericMethod_InitializeSession<
            pb::BridgeService::WithGenericMethod_CleanupSession<pb::BridgeService::WithGenericMethod_GetSession<
                pb::BridgeService::WithGenericMethod_Heartbeat<pb::BridgeService::WithGenericMethod_ExecuteTool<
                    pb::BridgeService::WithGenericMethod_ExecuteStreamingTool<
                        pb::BridgeService::WithGenericMethod_ExecuteToolCalls<
                            pb::BridgeService::WithGenericMethod_RegisterTools<
                                pb::BridgeService::WithGenericMethod_GetWorkerReport<pb::BridgeService::Service>>>>>>>>>>>>>;

namespace {
// A call, from its arrival to its answer: answered once, from any thread.
class ServerCall {
 public:
  virtual ~ServerCall() = default;
  virtual void finish(const grpc::Status& status) = 0;
};

// A call of one method. It keeps itself alive from the moment it waits for
// an arrival until its answer was sent (or the server shut down).
template <class Request, class Response>
class MethodCall final : public ServerCall {
 public:
  using Listen = void (Service::*)(grpc::ServerContext*, Request*, grpc::ServerAsyncResponseWriter<Response>*,
                                   grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  using Handle = std::function<void(const std::shared_ptr<MethodCall>&)>;

  // Waits for the method's next call; `handle` takes it, on the queue
  // thread, and the next one waits from then.
  static void listen(Service& service, Listen method, grpc::ServerCompletionQueue& queue, Handle handle) {
    auto call = std::make_shared<MethodCall>(service, method, queue, std::move(handle));
    call->self_ = call;
    (service.*method)(&call->context_, &call->request, &call->writer_, &queue, &queue, call->arrived_.tag());
  }

  MethodCall(Service& service, Listen method, grpc::ServerCompletionQueue& queue, Handle handle)
      : service_(service), method_(method), queue_(queue), handle_(std::move(handle)) {}

  void finish(const grpc::Status& status) override {
    if (status.ok()) return writer_.Finish(response, status, finished_.tag());
    writer_.FinishWithError(status, finished_.tag());
  }

  Request request;
  Response response;

 private:
  void arrived(bool ok) {
    if (!ok) return self_.reset();  // the server is shutting down
    listen(service_, method_, queue_, handle_);
    handle_(self_);
  }

  Service& service_;
  const Listen method_;
  grpc::ServerCompletionQueue& queue_;
  const Handle handle_;
  grpc::ServerContext context_;
  grpc::ServerAsyncResponseWriter<Response> writer_{&context_};
  QueueOp arrived_{[this](bool ok) { arrived(ok); }};
  QueueOp finished_{[this](bool) { self_.reset(); }};
  std::shared_ptr<MethodCall> self_;
};

// A call of any other method: answered UNIMPLEMENTED.
class UnknownMethodCall {
 public:
  static void listen(grpc::AsyncGenericService& service, grpc::ServerCompletionQueue& queue) {
    auto call = std::make_shared<UnknownMethodCall>(service, queue);
    call->self_ = call;
    service.RequestCall(&call->context_, &call->stream_, &queue, &queue, call->arrived_.tag());
  }

  UnknownMethodCall(grpc::AsyncGenericService& service, grpc::ServerCompletionQueue& queue)
      : service_(service), queue_(queue) {}

 private:
  void arrived(bool ok) {
    if (!ok) return self_.reset();  // the server is shutting down
    listen(service_, queue_);
    stream_.Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                fmt::format("{} is not served on the Elixir-tool socket", context_.method())),
                   finished_.tag());
  }

  grpc::AsyncGenericService& service_;
  grpc::ServerCompletionQueue& queue_;
  grpc::GenericServerContext context_;
  grpc::GenericServerAsyncReaderWriter stream_{&context_};
  QueueOp arrived_{[this](bool ok) { arrived(ok); }};
  QueueOp finished_{[this](bool) { self_.reset(); }};
  std::shared_ptr<UnknownMethodCall> self_;
};

using ExecuteCall = MethodCall<pb::ExecuteElixirToolRequest, pb::ExecuteElixirToolResponse>;
using ListCall = MethodCall<pb::GetExposedElixirToolsRequest, pb::GetExposedElixirToolsResponse>;
using TelemetryCall = MethodCall<pb::TelemetryBatch, pb::TelemetryBatchResponse>;
}  // namespace

struct ElixirToolServer::Impl {
  struct Pending {
    std::shared_ptr<ServerCall> call;
    std::variant<pb::ExecuteElixirToolResponse*, pb::GetExposedElixirToolsResponse*, pb::TelemetryBatchResponse*>
        response;
    std::uint64_t token = 0;  // who it was handed to; 0 until dispatched
  };

  Dispatch dispatch;
  std::atomic<std::uint64_t> next_id{1};
  std::mutex mutex;
  std::unordered_map<std::uint64_t, Pending> pending;
  std::unordered_set<std::uint64_t> gone_tokens;  // takers that died
  Service service;
  grpc::AsyncGenericService unknown_methods;
  grpc::ServerCompletionQueue* server_queue = nullptr;  // owned by queue_thread
  std::unique_ptr<QueueThread> queue_thread;
  std::unique_ptr<grpc::Server> server;

  std::optional<Pending> take(std::uint64_t id) {
    std::lock_guard lock(mutex);
    auto it = pending.find(id);
    if (it == pending.end()) return std::nullopt;
    Pending found = std::move(it->second);
    pending.erase(it);
    return found;
  }

  void park(ElixirToolCall&& call, Pending pending_call) {
    auto server_call = pending_call.call;
    const auto id = call.id;
    {
      std::lock_guard lock(mutex);
      pending.emplace(id, std::move(pending_call));
    }
    const auto token = dispatch(std::move(call));
    if (!token) {
      if (take(id)) server_call->finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the Elixir tool registry is not running"));
      return;
    }
    // Its taker may have died between the hand-over and here.
    bool gone = false;
    {
      std::lock_guard lock(mutex);
      auto it = pending.find(id);
      if (it == pending.end()) return;  // answered already
      if (gone_tokens.count(*token) != 0) {
        pending.erase(it);
        gone = true;
      } else {
        it->second.token = *token;
      }
    }
    if (gone) server_call->finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, kTakerGone));
  }

  void execute(const std::shared_ptr<ExecuteCall>& server_call) {
    ElixirToolCall call;
    call.id = next_id++;
    call.kind = ElixirToolCall::Kind::execute;
    call.session_id = server_call->request.session_id();
    call.tool = server_call->request.tool_name();
    for (const auto& [name, any] : server_call->request.parameters()) call.params_json.emplace_back(name, any.value());
    park(std::move(call), Pending{server_call, &server_call->response});
  }

  void list(const std::shared_ptr<ListCall>& server_call) {
    ElixirToolCall call;
    call.id = next_id++;
    call.kind = ElixirToolCall::Kind::list;
    call.session_id = server_call->request.session_id();
    park(std::move(call), Pending{server_call, &server_call->response});
  }

  void telemetry(const std::shared_ptr<TelemetryCall>& server_call) {
    if (server_call->request.events_size() > kMaxTelemetryEvents)
      return server_call->finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "telemetry batch too large"));
    ElixirToolCall call;
    call.id = next_id++;
    call.kind = ElixirToolCall::Kind::telemetry;
    call.telemetry = telemetry_batch(server_call->request);
    park(std::move(call), Pending{server_call, &server_call->response});
  }

  void listen() {
    ExecuteCall::listen(service, &Service::RequestExecuteElixirTool, *server_queue,
                        [this](const auto& call) { execute(call); });
    ListCall::listen(service, &Service::RequestGetExposedElixirTools, *server_queue,
                     [this](const auto& call) { list(call); });
    TelemetryCall::listen(service, &Service::RequestEmitTelemetry, *server_queue,
                          [this](const auto& call) { telemetry(call); });
    UnknownMethodCall::listen(unknown_methods, *server_queue);
  }
};

ElixirToolServer::ElixirToolServer(const std::string& socket_path, Dispatch dispatch)
    : socket_path_(socket_path), impl_(std::make_unique<Impl>()) {
  impl_->dispatch = std::move(dispatch);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(fmt::format("unix:{}", socket_path), grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  builder.RegisterService(&impl_->service);
  builder.RegisterAsyncGenericService(&impl_->unknown_methods);
  auto queue = builder.AddCompletionQueue();
  impl_->server_queue = queue.get();
  impl_->server = builder.BuildAndStart();
  if (!impl_->server) throw std::runtime_error(fmt::format("cannot listen on unix:{}", socket_path));
  impl_->queue_thread = std::make_unique<QueueThread>(std::move(queue));
  impl_->listen();
}

// The server stops first (its waiting calls complete as failed), then the
// queue drains; parked calls go with the pending table.
ElixirToolServer::~ElixirToolServer() {
  impl_->server->Shutdown(std::chrono::system_clock::now());
  impl_->queue_thread.reset();
}

grpc::CompletionQueue& ElixirToolServer::queue() { return impl_->queue_thread->queue(); }

void ElixirToolServer::reply_execute(std::uint64_t id, bool ok, std::string result_json_or_message,
                                     bool not_found) {
  auto pending = impl_->take(id);
  if (!pending) return;
  if (std::holds_alternative<pb::TelemetryBatchResponse*>(pending->response)) {
    return pending->call->finish(ok ? grpc::Status::OK
                                       : grpc::Status(grpc::StatusCode::UNAVAILABLE, result_json_or_message));
  }
  auto** response = std::get_if<pb::ExecuteElixirToolResponse*>(&pending->response);
  if (response == nullptr) return pending->call->finish(grpc::Status(grpc::StatusCode::INTERNAL, "wrong reply kind"));
  (*response)->set_success(ok);
  if (ok) {
    (*response)->mutable_result()->set_type_url(wire::kJsonTypeUrl.data(), wire::kJsonTypeUrl.size());
    (*response)->mutable_result()->set_value(std::move(result_json_or_message));
  } else {
    (*response)->set_error_message(std::move(result_json_or_message));
    if (not_found) (*(*response)->mutable_metadata())["error_kind"] = "not_found";
  }
  pending->call->finish(grpc::Status::OK);
}

void ElixirToolServer::reply_list(std::uint64_t id, std::vector<ElixirToolSpec> tools) {
  auto pending = impl_->take(id);
  if (!pending) return;
  auto** response = std::get_if<pb::GetExposedElixirToolsResponse*>(&pending->response);
  if (response == nullptr) return pending->call->finish(grpc::Status(grpc::StatusCode::INTERNAL, "wrong reply kind"));
  for (auto& tool : tools) {
    auto* spec = (*response)->add_tools();
    spec->set_name(std::move(tool.name));
    spec->set_description(std::move(tool.description));
  }
  pending->call->finish(grpc::Status::OK);
}


std::size_t ElixirToolServer::fail_pending(std::uint64_t token, const std::string& message) {
  std::vector<std::shared_ptr<ServerCall>> calls;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->gone_tokens.insert(token);
    for (auto it = impl_->pending.begin(); it != impl_->pending.end();) {
      if (it->second.token == token) {
        calls.push_back(std::move(it->second.call));
        it = impl_->pending.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& call : calls) call->finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, message));
  return calls.size();
}


}  // namespace snakepit::transport
