// The one thread of ours that drains the NIF's gRPC completion queue, and
// the tags it completes. Every gRPC operation of the BEAM (calls to
// workers, their deadline alarms, the Elixir-tool server) completes here:
// gRPC's callback API would run them on its own two threads instead, which
// hand epoll's poller back and forth on every event (bench/README "One
// CompletionQueue thread"). No erl_nif here.
#pragma once

#include <grpcpp/completion_queue.h>

#include <functional>
#include <memory>
#include <thread>

namespace snakepit::transport {

// A tag: what runs on the queue thread when its operation completes. It is
// a member of the object that started the operation, which stays alive
// until the tag completed (each owner holds itself until its last tag).
class QueueOp {
 public:
  explicit QueueOp(std::function<void(bool ok)> on_done) : on_done_(std::move(on_done)) {}
  QueueOp(const QueueOp&) = delete;
  QueueOp& operator=(const QueueOp&) = delete;

  void* tag() { return this; }
  void complete(bool ok) { on_done_(ok); }

 private:
  std::function<void(bool ok)> on_done_;
};

class QueueThread {
 public:
  // The queue may be a server's (the Elixir-tool server's): client calls
  // share it, so one thread serves both.
  explicit QueueThread(std::unique_ptr<grpc::CompletionQueue> queue);
  // Shuts the queue down and waits until its operations completed (calls
  // still in flight end by their deadlines). Never run on the queue thread:
  // its owner is the NIF's private data, not a call.
  ~QueueThread();
  QueueThread(const QueueThread&) = delete;
  QueueThread& operator=(const QueueThread&) = delete;

  grpc::CompletionQueue& queue() { return *queue_; }

 private:
  void drain();
  static void complete(QueueOp& op, bool ok) noexcept;

  std::unique_ptr<grpc::CompletionQueue> queue_;
  std::thread thread_;
};

}  // namespace snakepit::transport
