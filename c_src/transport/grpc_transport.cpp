// The gRPC transport (grpc_transport.hpp): one channel per worker socket,
// unary calls on the worker's call stream (call_stream.hpp; single RPCs
// for a worker that lacks it), streams read under a credit window, pings;
// gRPC statuses become core::TransportResult.
#include "grpc_transport.hpp"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <mutex>

#include "../codec/json.hpp"
#include "../core/wire.hpp"
#include "call_result.hpp"
#include "call_stream.hpp"
#include "deadline.hpp"
#include "snakepit_bridge.grpc.pb.h"

namespace snakepit::transport {
namespace {

namespace pb = ::snakepit::bridge;

using wire::kBinaryTypeUrl;

void fill_request(pb::ExecuteToolRequest& request, core::CallRequest&& call) {
  request.set_request_id(call.request_id);
  request.set_tool_name(std::move(call.tool));
  request.set_session_id(std::move(call.session_id));
  request.set_stream(call.stream);
  if (!call.correlation_id.empty())
    (*request.mutable_metadata())[std::string(wire::kCorrelationIdKey)] = std::move(call.correlation_id);
  if (call.thread_sensitive)
    (*request.mutable_metadata())[std::string(wire::kThreadSensitiveKey)] = std::string(wire::kThreadSensitiveValue);
  auto& binaries = *request.mutable_binary_parameters();
  std::string& json = *request.mutable_parameters_json();
  std::size_t size = 2;
  for (const auto& param : call.params) size += param.binary ? 0 : param.name.size() + param.data.size() + 8;
  json.reserve(size);
  for (auto& param : call.params) {
    if (param.binary) {
      binaries[param.name] = std::move(param.data);
      continue;
    }
    json.push_back(json.empty() ? '{' : ',');
    codec::append_string(json, param.name);
    json.push_back(':');
    json.append(param.data);
    std::string().swap(param.data);  // a large argument is held once, not twice
  }
  if (!json.empty()) json.push_back('}');
}

struct UnaryCall final : core::CallHandle {
  grpc::ClientContext context;
  pb::ExecuteToolRequest request;
  pb::ExecuteToolResponse response;
  void cancel() noexcept override { context.TryCancel(); }
};

// A server stream read under a credit window: at most `window` chunks are
// read ahead of what the consumer granted, so a fast tool cannot flood a
// slow caller; HTTP/2 flow control pushes back to the worker.
class StreamCall final : public core::CallHandle, public grpc::ClientReadReactor<pb::ToolChunk> {
 public:
  StreamCall(int window, core::WorkerConnection::Chunk on_chunk, core::WorkerConnection::Done done)
      : credits_(window), on_chunk_(std::move(on_chunk)), done_(std::move(done)) {}

  void start(pb::BridgeService::Stub& stub, std::shared_ptr<StreamCall> self) {
    self_ = std::move(self);
    stub.async()->ExecuteStreamingTool(&context, &request, this);
    // grant() and cancel() start reads from outside reactions: the hold
    // keeps the reader alive until a read has failed (gRPC's contract).
    AddHold();
    StartRead(&chunk_);
    StartCall();
  }

  void cancel() noexcept override {
    context.TryCancel();
    std::lock_guard lock(mutex_);
    if (paused_ && !hold_released_) {
      paused_ = false;
      StartRead(&chunk_);  // fails at once and releases the hold
    }
  }

  void grant(int credits) noexcept override {
    std::lock_guard lock(mutex_);
    credits_ += credits;
    if (paused_ && credits_ > 0 && !hold_released_) {
      paused_ = false;
      StartRead(&chunk_);
    }
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        std::lock_guard lock(mutex_);
        hold_released_ = true;
      }
      RemoveHold();  // OnDone follows
      return;
    }
    const auto& metadata = chunk_.metadata();
    auto type = metadata.find(std::string(wire::kChunkTypeKey));
    const bool binary = type != metadata.end() && type->second == kBinaryTypeUrl;
    on_chunk_(std::move(*chunk_.mutable_data()), binary, chunk_.is_final());
    std::lock_guard lock(mutex_);
    if (--credits_ > 0) {
      StartRead(&chunk_);
    } else {
      paused_ = true;
    }
  }

  void OnDone(const grpc::Status& status) override {
    // Moved out so the request they capture does not keep this call alive.
    auto done = std::move(done_);
    on_chunk_ = nullptr;
    done(classify_status(status.error_code(), status.error_message()));
    self_.reset();  // the last reference may be this one
  }

  grpc::ClientContext context;
  pb::ExecuteToolRequest request;

 private:
  std::mutex mutex_;
  int credits_;
  bool paused_ = false;
  bool hold_released_ = false;
  pb::ToolChunk chunk_;
  core::WorkerConnection::Chunk on_chunk_;
  core::WorkerConnection::Done done_;
  std::shared_ptr<StreamCall> self_;
};

class GrpcConnection final : public core::WorkerConnection, public std::enable_shared_from_this<GrpcConnection> {
 public:
  explicit GrpcConnection(const std::string& socket_path) {
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(-1);
    arguments.SetMaxSendMessageSize(-1);
    // A stream's Python error (with its traceback) arrives as status details.
    arguments.SetInt(GRPC_ARG_MAX_METADATA_SIZE, 64 * 1024);
    // A worker restart must not leave the channel waiting out a long backoff.
    arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    channel_ = grpc::CreateCustomChannel(fmt::format("unix:{}", socket_path), grpc::InsecureChannelCredentials(), arguments);
    stub_ = pb::BridgeService::NewStub(channel_);
  }

  ~GrpcConnection() override {
    std::lock_guard lock(calls_mutex_);
    if (calls_) calls_->close();
  }

  std::shared_ptr<core::CallHandle> execute(core::CallRequest&& call, core::TimePoint deadline, Done done) override {
    pb::ExecuteToolRequest request;
    fill_request(request, std::move(call));
    if (auto stream = call_stream())
      if (auto handle = stream->submit(request, deadline, done)) return handle;
    return execute_unary(std::move(request), deadline, std::move(done));
  }

  std::shared_ptr<core::CallHandle> execute_unary(pb::ExecuteToolRequest&& request, core::TimePoint deadline,
                                                  Done done) {
    auto state = std::make_shared<UnaryCall>();
    state->context.set_deadline(to_system(deadline));
    state->request = std::move(request);
    stub_->async()->ExecuteTool(&state->context, &state->request, &state->response,
                                [state, done = std::move(done)](grpc::Status status) {
                                  if (!status.ok()) return done(classify_status(status.error_code(), status.error_message()));
                                  auto& response = state->response;
                                  const bool binary = response.result().type_url() == kBinaryTypeUrl;
                                  done(classify_response(response.success(), std::move(*response.mutable_result()->mutable_value()),
                                                         binary, response.error_message()));
                                });
    return state;
  }

  std::shared_ptr<core::CallHandle> execute_stream(core::CallRequest&& call, core::TimePoint deadline, int window,
                                                   Chunk on_chunk, Done done) override {
    auto state = std::make_shared<StreamCall>(window, std::move(on_chunk), std::move(done));
    state->context.set_deadline(to_system(deadline));
    fill_request(state->request, std::move(call));
    state->start(*stub_, state);
    return state;
  }

  void ping(core::Millis timeout, bool wait_for_ready, std::function<void(bool)> done) override {
    send_ping(timeout, wait_for_ready,
              [done = std::move(done)](const grpc::Status& status, const pb::PingResponse&) { done(status.ok()); });
  }

  void running(core::Millis timeout, Running done) override {
    send_ping(timeout, false, [done = std::move(done)](const grpc::Status& status, const pb::PingResponse& response) {
      if (!status.ok()) return done(std::nullopt);
      const auto& ids = response.running_requests();
      done(std::vector<std::uint64_t>(ids.begin(), ids.end()));
    });
  }

  void report(core::Millis timeout,
              std::function<void(std::optional<std::vector<core::ToolConcurrency>>)> done) override {
    struct ReportCall {
      grpc::ClientContext context;
      pb::WorkerReportRequest request;
      pb::WorkerReportResponse response;
    };
    auto state = std::make_shared<ReportCall>();
    state->context.set_deadline(std::chrono::system_clock::now() + timeout);
    stub_->async()->GetWorkerReport(&state->context, &state->request, &state->response,
                                    [state, done = std::move(done)](grpc::Status status) {
                                      if (!status.ok()) return done(std::nullopt);
                                      std::vector<core::ToolConcurrency> tools;
                                      for (const auto& tool : state->response.tools())
                                        tools.push_back({tool.tool_name(), tool.max_concurrency(), tool.calls(),
                                                         tool.thread_safe()});
                                      done(std::move(tools));
                                    });
  }

 private:
  using PingDone = std::function<void(const grpc::Status&, const pb::PingResponse&)>;
  void send_ping(core::Millis timeout, bool wait_for_ready, PingDone done) {
    struct PingCall {
      grpc::ClientContext context;
      pb::PingRequest request;
      pb::PingResponse response;
    };
    auto state = std::make_shared<PingCall>();
    state->context.set_deadline(std::chrono::system_clock::now() + timeout);
    state->context.set_wait_for_ready(wait_for_ready);
    stub_->async()->Ping(&state->context, &state->request, &state->response,
                         [state, done = std::move(done)](grpc::Status status) { done(status, state->response); });
  }

  // The worker's call stream, opened at the first call and again after it
  // ended; nullptr once the worker refused it (it gets single RPCs).
  std::shared_ptr<CallStream> call_stream() {
    std::lock_guard lock(calls_mutex_);
    if (unary_only_) return nullptr;
    if (!calls_ || calls_->ended())
      calls_ = CallStream::open(*stub_, [connection = weak_from_this()](std::vector<CallStream::Refused>&& calls) {
        refused(connection.lock(), std::move(calls));
      });
    return calls_;
  }

  // The worker lacks ExecuteToolCalls: its first calls, never started, go
  // again as single RPCs, and so do all later ones.
  static void refused(const std::shared_ptr<GrpcConnection>& connection, std::vector<CallStream::Refused>&& calls) {
    if (connection) {
      std::lock_guard lock(connection->calls_mutex_);
      connection->unary_only_ = true;
    }
    for (auto& call : calls) {
      if (!connection) {
        call.done(classify_status(grpc::StatusCode::UNAVAILABLE, "the worker connection was closed"));
        continue;
      }
      call.request.clear_timeout_ms();
      call.redirect(connection->execute_unary(std::move(call.request), call.deadline, std::move(call.done)));
    }
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::BridgeService::Stub> stub_;
  std::mutex calls_mutex_;
  std::shared_ptr<CallStream> calls_;
  bool unary_only_ = false;
};

class GrpcTransport final : public core::Transport {
 public:
  // gRPC 1.51 runs callbacks on a shared completion queue whose threads are
  // joined when the last channel using it goes away. A worker's channel can
  // be released inside one of its own callbacks (the call context holds it),
  // which would join the running thread (grpc/grpc#32584). The anchor is a
  // channel that takes a reference on that queue with one call whose
  // deadline has passed, and lives as long as the transport (the NIF).
  // Its one failed connect is not retried for a day.
  GrpcTransport() : anchor_(make_anchor_channel()), anchor_stub_(pb::BridgeService::NewStub(anchor_)) {
    struct AnchorCall {
      grpc::ClientContext context;
      pb::PingRequest request;
      pb::PingResponse response;
    };
    auto call = std::make_shared<AnchorCall>();
    call->context.set_deadline(std::chrono::system_clock::now());
    anchor_stub_->async()->Ping(&call->context, &call->request, &call->response, [call](grpc::Status) {});
  }

  std::shared_ptr<core::WorkerConnection> connect(const std::string& socket_path) override {
    return std::make_shared<GrpcConnection>(socket_path);
  }

 private:
  static std::shared_ptr<grpc::Channel> make_anchor_channel() {
    constexpr int kDayMs = 24 * 60 * 60 * 1000;
    grpc::ChannelArguments arguments;
    arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kDayMs);
    arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, kDayMs);
    arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kDayMs);
    return grpc::CreateCustomChannel("unix:/nonexistent/snakepit-anchor", grpc::InsecureChannelCredentials(),
                                     arguments);
  }

  std::shared_ptr<grpc::Channel> anchor_;
  std::unique_ptr<pb::BridgeService::Stub> anchor_stub_;
};

}  // namespace

std::shared_ptr<core::Transport> make_grpc_transport() { return std::make_shared<GrpcTransport>(); }

}  // namespace snakepit::transport
