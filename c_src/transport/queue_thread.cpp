// QueueThread (queue_thread.hpp): draining the completion queue.
#include "queue_thread.hpp"

#include <fmt/format.h>
#include <pthread.h>

#include <cstdio>
#include <exception>

namespace snakepit::transport {

QueueThread::QueueThread(std::unique_ptr<grpc::CompletionQueue> queue)
    : queue_(std::move(queue)), thread_([this] { drain(); }) {}

QueueThread::~QueueThread() {
  queue_->Shutdown();
  thread_.join();
}

void QueueThread::drain() {
  ::pthread_setname_np(::pthread_self(), "grpc_queue");
  void* tag = nullptr;
  bool ok = false;
  while (queue_->Next(&tag, &ok)) complete(*static_cast<QueueOp*>(tag), ok);
}

// An exception out of a completion would end the thread, and with it the
// BEAM (std::terminate). What that completion had left to do is lost (a
// call then ends by its deadline) and the thread goes on.
void QueueThread::complete(QueueOp& op, bool ok) noexcept {
  try {
    op.complete(ok);
  } catch (const std::exception& e) {
    fmt::print(stderr, "snakepit: a gRPC completion failed: {}\n", e.what());
  } catch (...) {
    fmt::print(stderr, "snakepit: a gRPC completion failed with a non-standard exception\n");
  }
}

}  // namespace snakepit::transport
