// The gRPC transport (grpc_transport.hpp): one channel per worker socket,
// unary calls on the worker's call stream (call_stream.hpp; single RPCs
// for a worker that lacks it), streams read under a credit window, pings;
// gRPC statuses become core::TransportResult. Every operation completes on
// the NIF's queue thread (queue_thread.hpp).
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
#include "queue_thread.hpp"
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

// A unary call on the queue. `done` runs once, on the queue thread, with
// the call's status and response; the call keeps itself alive until then.
template <class Response>
struct UnaryCall final : core::CallHandle {
  using Reader = grpc::ClientAsyncResponseReader<Response>;
  grpc::ClientContext context;
  Response response;
  grpc::Status status;
  std::unique_ptr<Reader> reader;
  std::function<void(UnaryCall&)> done;
  std::shared_ptr<UnaryCall> self;
  QueueOp finished{[this](bool) {
    auto keep = std::move(self);
    done(*this);
  }};

  void cancel() noexcept override { context.TryCancel(); }
};

// Starts a unary call: `prepare(context)` is the stub's PrepareAsync method
// for its request, on the queue.
template <class Response, class Prepare>
std::shared_ptr<UnaryCall<Response>> start_unary(std::chrono::system_clock::time_point deadline, bool wait_for_ready,
                                                 Prepare prepare, std::function<void(UnaryCall<Response>&)> done) {
  auto call = std::make_shared<UnaryCall<Response>>();
  call->context.set_deadline(deadline);
  call->context.set_wait_for_ready(wait_for_ready);
  call->done = std::move(done);
  call->reader = prepare(&call->context);
  call->self = call;
  call->reader->StartCall();
  call->reader->Finish(&call->response, &call->status, call->finished.tag());
  return call;
}

// A server stream read under a credit window: at most `window` chunks are
// read ahead of what the consumer granted, so a fast tool cannot flood a
// slow caller; HTTP/2 flow control pushes back to the worker. Reads begin
// once the call started; the status is asked for once a read failed.
class StreamCall final : public core::CallHandle {
 public:
  StreamCall(int window, core::WorkerConnection::Chunk on_chunk, core::WorkerConnection::Done done)
      : credits_(window), on_chunk_(std::move(on_chunk)), done_(std::move(done)) {}

  void start(pb::BridgeService::Stub& stub, grpc::CompletionQueue& queue, std::shared_ptr<StreamCall> self) {
    self_ = std::move(self);
    reader_ = stub.PrepareAsyncExecuteStreamingTool(&context, request, &queue);
    reader_->StartCall(started_.tag());
  }

  void cancel() noexcept override {
    context.TryCancel();
    std::lock_guard lock(mutex_);
    if (paused_) read();  // fails at once, and the status follows
  }

  void grant(int credits) noexcept override {
    std::lock_guard lock(mutex_);
    credits_ += credits;
    if (paused_ && credits_ > 0) read();
  }

  grpc::ClientContext context;
  pb::ExecuteToolRequest request;

 private:
  void on_started(bool ok) {
    std::lock_guard lock(mutex_);
    if (!ok) return reader_->Finish(&status_, finished_.tag());
    if (credits_ > 0) return read();
    paused_ = true;
  }

  void on_read(bool ok) {
    if (!ok) return reader_->Finish(&status_, finished_.tag());
    const auto& metadata = chunk_.metadata();
    auto type = metadata.find(std::string(wire::kChunkTypeKey));
    const bool binary = type != metadata.end() && type->second == kBinaryTypeUrl;
    on_chunk_(std::move(*chunk_.mutable_data()), binary, chunk_.is_final());
    std::lock_guard lock(mutex_);
    if (--credits_ > 0) return read();
    paused_ = true;
  }

  void on_finished() {
    // Moved out so the request they capture does not keep this call alive.
    auto done = std::move(done_);
    on_chunk_ = nullptr;
    done(classify_status(status_.error_code(), status_.error_message()));
    self_.reset();  // the last reference may be this one
  }

  void read() {  // under mutex_
    paused_ = false;
    reader_->Read(&chunk_, read_.tag());
  }

  std::unique_ptr<grpc::ClientAsyncReader<pb::ToolChunk>> reader_;
  QueueOp started_{[this](bool ok) { on_started(ok); }};
  QueueOp read_{[this](bool ok) { on_read(ok); }};
  QueueOp finished_{[this](bool) { on_finished(); }};
  std::mutex mutex_;
  int credits_;
  bool paused_ = false;  // started, no read in flight, waiting for credits
  pb::ToolChunk chunk_;
  grpc::Status status_;
  core::WorkerConnection::Chunk on_chunk_;
  core::WorkerConnection::Done done_;
  std::shared_ptr<StreamCall> self_;
};

class GrpcConnection final : public core::WorkerConnection, public std::enable_shared_from_this<GrpcConnection> {
 public:
  GrpcConnection(const std::string& socket_path, grpc::CompletionQueue& queue) : queue_(queue) {
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
    return start_unary<pb::ExecuteToolResponse>(
        to_system(deadline), false,
        [&](grpc::ClientContext* context) { return stub_->PrepareAsyncExecuteTool(context, request, &queue_); },
        [done = std::move(done)](UnaryCall<pb::ExecuteToolResponse>& call) {
          if (!call.status.ok()) return done(classify_status(call.status.error_code(), call.status.error_message()));
          auto& response = call.response;
          const bool binary = response.result().type_url() == kBinaryTypeUrl;
          done(classify_response(response.success(), std::move(*response.mutable_result()->mutable_value()), binary,
                                 response.error_message()));
        });
  }

  std::shared_ptr<core::CallHandle> execute_stream(core::CallRequest&& call, core::TimePoint deadline, int window,
                                                   Chunk on_chunk, Done done) override {
    auto state = std::make_shared<StreamCall>(window, std::move(on_chunk), std::move(done));
    state->context.set_deadline(to_system(deadline));
    fill_request(state->request, std::move(call));
    state->start(*stub_, queue_, state);
    return state;
  }

  void ping(core::Millis timeout, bool wait_for_ready, std::function<void(bool)> done) override {
    send_ping(timeout, wait_for_ready, [done = std::move(done)](PingCall& call) { done(call.status.ok()); });
  }

  void running(core::Millis timeout, Running done) override {
    send_ping(timeout, false, [done = std::move(done)](PingCall& call) {
      if (!call.status.ok()) return done(std::nullopt);
      const auto& ids = call.response.running_requests();
      done(std::vector<std::uint64_t>(ids.begin(), ids.end()));
    });
  }

  void report(core::Millis timeout,
              std::function<void(std::optional<std::vector<core::ToolConcurrency>>)> done) override {
    start_unary<pb::WorkerReportResponse>(
        std::chrono::system_clock::now() + timeout, false,
        [this](grpc::ClientContext* context) {
          return stub_->PrepareAsyncGetWorkerReport(context, pb::WorkerReportRequest(), &queue_);
        },
        [done = std::move(done)](UnaryCall<pb::WorkerReportResponse>& call) {
          if (!call.status.ok()) return done(std::nullopt);
          std::vector<core::ToolConcurrency> tools;
          for (const auto& tool : call.response.tools())
            tools.push_back({tool.tool_name(), tool.max_concurrency(), tool.calls(), tool.thread_safe()});
          done(std::move(tools));
        });
  }

 private:
  using PingCall = UnaryCall<pb::PingResponse>;
  void send_ping(core::Millis timeout, bool wait_for_ready, std::function<void(PingCall&)> done) {
    start_unary<pb::PingResponse>(
        std::chrono::system_clock::now() + timeout, wait_for_ready,
        [this](grpc::ClientContext* context) { return stub_->PrepareAsyncPing(context, pb::PingRequest(), &queue_); },
        std::move(done));
  }

  // The worker's call stream, opened at the first call and again after it
  // ended; nullptr once the worker refused it (it gets single RPCs).
  std::shared_ptr<CallStream> call_stream() {
    std::lock_guard lock(calls_mutex_);
    if (unary_only_) return nullptr;
    if (!calls_ || calls_->ended())
      calls_ = CallStream::open(*stub_, queue_, [connection = weak_from_this()](std::vector<CallStream::Refused>&& calls) {
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

  grpc::CompletionQueue& queue_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::BridgeService::Stub> stub_;
  std::mutex calls_mutex_;
  std::shared_ptr<CallStream> calls_;
  bool unary_only_ = false;
};

class GrpcTransport final : public core::Transport {
 public:
  explicit GrpcTransport(grpc::CompletionQueue& queue) : queue_(queue) {}

  std::shared_ptr<core::WorkerConnection> connect(const std::string& socket_path) override {
    return std::make_shared<GrpcConnection>(socket_path, queue_);
  }

 private:
  grpc::CompletionQueue& queue_;
};

}  // namespace

std::shared_ptr<core::Transport> make_grpc_transport(grpc::CompletionQueue& queue) {
  return std::make_shared<GrpcTransport>(queue);
}

}  // namespace snakepit::transport
