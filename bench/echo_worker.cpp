// A C++ stand-in for the Python worker, used to measure the native runtime
// alone (bench case 2). It speaks the worker protocol the pool expects:
//
//   * `<binary> -c ...` exits 0 at once (the pool probes an explicit
//     interpreter with `-c "import grpc, google.protobuf"`);
//   * `--socket PATH` names the unix socket to serve on; every other
//     argument (the Python command line the pool builds) is ignored, except
//     `--ready-fd N` and `--lifeline-fd N` (defaults: c_src/core/child_fds.hpp);
//   * once the server listens it writes {"status":"ready","pid":N} and a
//     newline to the ready fd and closes it;
//   * it exits when the lifeline fd reaches EOF or on SIGTERM / SIGINT.
//
// ExecuteTool, and each call on an ExecuteToolCalls stream, answers success
// with the request's JSON parameters as they came (one JSON object); Ping
// answers "pong".
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <memory>
#include <string>
#include <thread>

#include "../c_src/core/child_fds.hpp"
#include "../c_src/core/wire.hpp"
#include "write_queue.hpp"
#include "snakepit_bridge.grpc.pb.h"

namespace {

namespace pb = ::snakepit::bridge;

using snakepit::wire::kJsonTypeUrl;

// Ping, ExecuteTool and ExecuteToolCalls on the callback API; every other method keeps the
// generated synchronous default (UNIMPLEMENTED).
using EchoBase = pb::BridgeService::WithCallbackMethod_Ping<pb::BridgeService::WithCallbackMethod_ExecuteTool<
    pb::BridgeService::WithCallbackMethod_ExecuteToolCalls<pb::BridgeService::Service>>>;

void echo(const pb::ExecuteToolRequest& request, pb::ExecuteToolResponse& response) {
  std::string json = request.parameters_json().empty() ? std::string("{}") : request.parameters_json();
  response.set_success(true);
  auto* result = response.mutable_result();
  result->set_type_url(kJsonTypeUrl.data(), kJsonTypeUrl.size());
  result->set_value(std::move(json));
  response.set_request_id(request.request_id());
}

// ExecuteToolCalls: each request echoed in arrival order, one write in flight.
class CallsReactor final : public grpc::ServerBidiReactor<pb::ExecuteToolRequest, pb::ExecuteToolResponse> {
 public:
  CallsReactor() { StartRead(&request_); }
  void OnReadDone(bool ok) override {
    if (!ok) {
      std::lock_guard lock(mutex_);
      reading_done_ = true;
      if (writes_.idle()) Finish(grpc::Status::OK);
      return;
    }
    if (request_.cancel()) {  // a cancel frame: every call is answered at once anyway
      StartRead(&request_);
      return;
    }
    pb::ExecuteToolResponse response;
    echo(request_, response);
    {
      std::lock_guard lock(mutex_);
      if (writes_.push(std::move(response))) StartWrite(&writes_.current());
    }
    StartRead(&request_);
  }
  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mutex_);
    if (!ok) return;
    if (writes_.written()) StartWrite(&writes_.current());
    else if (reading_done_) Finish(grpc::Status::OK);
  }
  void OnDone() override { delete this; }

 private:
  std::mutex mutex_;
  pb::ExecuteToolRequest request_;
  WriteQueue<pb::ExecuteToolResponse> writes_;
  bool reading_done_ = false;
};

class EchoService final : public EchoBase {
 public:
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context, const pb::PingRequest* request,
                                 pb::PingResponse* response) override {
    response->set_message(request->message().empty() ? "pong" : request->message());
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* ExecuteTool(grpc::CallbackServerContext* context, const pb::ExecuteToolRequest* request,
                                        pb::ExecuteToolResponse* response) override {
    // The parameters arrive as one JSON object: echoed as they came.
    echo(*request, *response);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerBidiReactor<pb::ExecuteToolRequest, pb::ExecuteToolResponse>* ExecuteToolCalls(
      grpc::CallbackServerContext*) override {
    return new CallsReactor();  // gRPC's callback API: the reactor deletes itself in OnDone
  }
};

int parse_fd(const char* text, int fallback) {
  char* end = nullptr;
  errno = 0;
  long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < -1 || value > 1 << 20) return fallback;
  return static_cast<int>(value);
}

void write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "-c") == 0) return 0;  // interpreter probe

  std::string socket_path;
  int ready_fd = snakepit::core::kReadyFd, lifeline_fd = snakepit::core::kLifelineFd;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--socket") == 0) socket_path = argv[++i];
    else if (std::strcmp(argv[i], "--ready-fd") == 0) ready_fd = parse_fd(argv[++i], snakepit::core::kReadyFd);
    else if (std::strcmp(argv[i], "--lifeline-fd") == 0) lifeline_fd = parse_fd(argv[++i], snakepit::core::kLifelineFd);
  }
  if (socket_path.empty()) {
    std::fprintf(stderr, "echo_worker: --socket PATH is required\n");
    return 2;
  }

  // Block the stop signals in every thread (gRPC's included); the main
  // thread takes them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ::unlink(socket_path.c_str());
  EchoService service;
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  builder.AddListeningPort("unix:" + socket_path, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::string error = "{\"status\":\"error\",\"type\":\"BindError\",\"message\":\"cannot bind unix:" + socket_path +
                        "\",\"traceback\":\"\"}\n";
    if (ready_fd >= 0) write_all(ready_fd, error);
    return 1;
  }

  if (ready_fd >= 0) {
    write_all(ready_fd, "{\"status\":\"ready\",\"pid\":" + std::to_string(::getpid()) + "}\n");
    ::close(ready_fd);
  }

  if (lifeline_fd >= 0) {
    // EOF (or an error) on the lifeline: the parent is gone.
    std::thread([lifeline_fd] {
      char buffer[256];
      for (;;) {
        ssize_t n = ::read(lifeline_fd, buffer, sizeof buffer);
        if (n > 0 || (n < 0 && errno == EINTR)) continue;
        break;
      }
      ::kill(::getpid(), SIGTERM);
    }).detach();
  }

  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) != 0) {
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  ::unlink(socket_path.c_str());
  std::_Exit(0);
}
