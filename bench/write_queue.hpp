// The writes of one gRPC stream, one in flight at a time (gRPC's rule),
// taken from a queue: shared by the bench's client and server reactors.
// Every member is called under the reactor's own lock.
#pragma once

#include <deque>
#include <utility>

template <class Message>
class WriteQueue {
 public:
  // Queues `message`; true when the caller must now StartWrite(&current()).
  bool push(Message message) {
    pending_.push_back(std::move(message));
    return !writing_ && advance();
  }
  // A write completed; true when the caller must StartWrite(&current()).
  bool written() {
    writing_ = false;
    return advance();
  }
  Message& current() { return current_; }
  bool idle() const { return !writing_ && pending_.empty(); }

 private:
  bool advance() {
    if (pending_.empty()) return false;
    current_ = std::move(pending_.front());
    pending_.pop_front();
    writing_ = true;
    return true;
  }

  std::deque<Message> pending_;
  Message current_;
  bool writing_ = false;
};
