#include "grpc_transport.hpp"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "snakepit_bridge.grpc.pb.h"

namespace snakepit::transport {
namespace {

namespace pb = ::snakepit::bridge;
using core::TransportResult;

constexpr const char* kBinaryType = "type.googleapis.com/snakepit.binary";
constexpr const char* kJsonType = "type.googleapis.com/snakepit.json";

std::chrono::system_clock::time_point to_system(core::TimePoint deadline) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(deadline - core::SteadyClock::now());
}

TransportResult::Status classify(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return TransportResult::Status::ok;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return TransportResult::Status::deadline_exceeded;
    case grpc::StatusCode::CANCELLED: return TransportResult::Status::cancelled;
    case grpc::StatusCode::UNAVAILABLE: return TransportResult::Status::unavailable;
    default: return TransportResult::Status::other;
  }
}

struct UnaryCall final : core::CallHandle {
  grpc::ClientContext context;
  pb::ExecuteToolRequest request;
  pb::ExecuteToolResponse response;
  void cancel() noexcept override { context.TryCancel(); }
};

class GrpcConnection final : public core::WorkerConnection {
 public:
  explicit GrpcConnection(const std::string& socket_path) {
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(-1);
    arguments.SetMaxSendMessageSize(-1);
    // A worker restart must not leave the channel waiting out a long backoff.
    arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    channel_ = grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), arguments);
    stub_ = pb::BridgeService::NewStub(channel_);
  }

  std::shared_ptr<core::CallHandle> execute(core::CallRequest&& call, core::TimePoint deadline, Done done) override {
    auto state = std::make_shared<UnaryCall>();
    state->context.set_deadline(to_system(deadline));
    state->request.set_tool_name(std::move(call.tool));
    state->request.set_session_id(std::move(call.session_id));
    auto& parameters = *state->request.mutable_parameters();
    auto& binaries = *state->request.mutable_binary_parameters();
    for (auto& param : call.params) {
      if (param.binary) {
        binaries[param.name] = std::move(param.data);
      } else {
        auto& any = parameters[param.name];
        any.set_type_url(kJsonType);
        any.set_value(std::move(param.data));
      }
    }
    stub_->async()->ExecuteTool(&state->context, &state->request, &state->response,
                                [state, done = std::move(done)](grpc::Status status) {
                                  TransportResult result;
                                  result.status = classify(status.error_code());
                                  result.grpc_code = static_cast<int>(status.error_code());
                                  result.grpc_message = status.error_message();
                                  if (status.ok()) {
                                    auto& response = state->response;
                                    result.success = response.success();
                                    if (result.success) {
                                      result.payload_binary = response.result().type_url() == kBinaryType;
                                      result.payload = std::move(*response.mutable_result()->mutable_value());
                                    } else {
                                      result.error_json = std::move(*response.mutable_error_message());
                                    }
                                  }
                                  done(std::move(result));
                                });
    return state;
  }

  void ping(core::Millis timeout, std::function<void(bool)> done) override {
    struct PingCall {
      grpc::ClientContext context;
      pb::PingRequest request;
      pb::PingResponse response;
    };
    auto state = std::make_shared<PingCall>();
    state->context.set_deadline(std::chrono::system_clock::now() + timeout);
    stub_->async()->Ping(&state->context, &state->request, &state->response,
                         [state, done = std::move(done)](grpc::Status status) { done(status.ok()); });
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
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::BridgeService::Stub> stub_;
};

class GrpcTransport final : public core::Transport {
 public:
  std::shared_ptr<core::WorkerConnection> connect(const std::string& socket_path) override {
    return std::make_shared<GrpcConnection>(socket_path);
  }
};

}  // namespace

std::shared_ptr<core::Transport> make_grpc_transport() { return std::make_shared<GrpcTransport>(); }

}  // namespace snakepit::transport
