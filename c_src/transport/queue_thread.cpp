// QueueThread (queue_thread.hpp): draining the completion queue.
#include "queue_thread.hpp"

#include <pthread.h>

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
  while (queue_->Next(&tag, &ok)) static_cast<QueueOp*>(tag)->complete(ok);
}

}  // namespace snakepit::transport
