// CallStream (call_stream.hpp): the writes, replies, deadlines and end of
// one worker's ExecuteToolCalls stream.
#include "call_stream.hpp"

#include <algorithm>
#include <chrono>

#include "../core/wire.hpp"
#include "call_result.hpp"
#include "deadline.hpp"

namespace snakepit::transport {

namespace pb = ::snakepit::bridge;

// A call's handle: cancels it on the stream, or the unary call that
// replaced it when the worker refused the stream.
class CallStreamHandle final : public core::CallHandle {
 public:
  CallStreamHandle(std::weak_ptr<CallStream> stream, std::uint64_t request_id)
      : stream_(std::move(stream)), request_id_(request_id) {}

  void cancel() noexcept override {
    std::shared_ptr<core::CallHandle> unary;
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
      unary = unary_;
    }
    if (unary) return unary->cancel();
    if (auto stream = stream_.lock()) stream->cancel(request_id_);
  }

  void redirect(std::shared_ptr<core::CallHandle> unary) {
    bool cancelled = false;
    {
      std::lock_guard lock(mutex_);
      unary_ = unary;
      cancelled = cancelled_;
    }
    if (cancelled) unary->cancel();
  }

 private:
  std::weak_ptr<CallStream> stream_;
  const std::uint64_t request_id_;
  std::mutex mutex_;
  bool cancelled_ = false;
  std::shared_ptr<core::CallHandle> unary_;
};

struct CallStream::Waiting {
  pb::ExecuteToolRequest request;
  core::TimePoint deadline;
  Done done;
  std::weak_ptr<CallStreamHandle> handle;

  // The deadline alarm. Its callback also completes a cancelled call, so
  // that cancel() never runs `done` on the caller's thread (as a unary
  // call's TryCancel does not). Set and Cancel may race (a cancel or reply
  // during submit): the mutex orders them, and a disarm before the Set
  // cancels right after it.
  std::mutex alarm_mutex;
  grpc::Alarm alarm;
  bool armed = false;
  bool disarmed = false;

  void arm(std::function<void(bool)> on_alarm) {
    std::lock_guard lock(alarm_mutex);
    alarm.Set(to_system(deadline), std::move(on_alarm));
    armed = true;
    if (disarmed) alarm.Cancel();
  }
  void disarm() {
    std::lock_guard lock(alarm_mutex);
    disarmed = true;
    if (armed) alarm.Cancel();
  }
};

std::shared_ptr<CallStream> CallStream::open(pb::BridgeService::Stub& stub, OnRefused on_refused) {
  auto stream = std::make_shared<CallStream>(Key{}, std::move(on_refused));
  stream->self_ = stream;
  stub.async()->ExecuteToolCalls(&stream->context_, stream.get());
  // Writes start from outside reactions: the hold keeps the stream open
  // until its read side has failed (gRPC's contract).
  stream->AddHold();
  stream->StartRead(&stream->reply_);
  stream->StartCall();
  return stream;
}

std::shared_ptr<core::CallHandle> CallStream::submit(pb::ExecuteToolRequest& request, core::TimePoint deadline,
                                                     Done& done) {
  const auto id = request.request_id();
  auto call = std::make_shared<Waiting>();
  auto handle = std::make_shared<CallStreamHandle>(weak_from_this(), id);
  {
    std::lock_guard lock(mutex_);
    if (ended_ || closing_ || waiting_.contains(id)) return nullptr;
    call->request = std::move(request);
    call->deadline = deadline;
    call->done = std::move(done);
    call->handle = handle;
    waiting_.emplace(id, call);
    queue_write(Write{call});
  }
  call->arm([stream = weak_from_this(), id](bool fired) {
    if (auto self = stream.lock()) self->on_alarm(id, fired);
  });
  return handle;
}

bool CallStream::ended() {
  std::lock_guard lock(mutex_);
  return ended_ || closing_;
}

void CallStream::close() noexcept {
  std::lock_guard lock(mutex_);
  closing_ = true;
  if (!writing_ && !ended_) start_next_write();
}

void CallStream::cancel(std::uint64_t request_id) noexcept {
  std::shared_ptr<Waiting> call;
  {
    std::lock_guard lock(mutex_);
    call = take(request_id);
    if (!call) return;
    cancelled_.emplace(request_id, call);
    queue_write(Write{nullptr, request_id});  // not started yet: it never will be
  }
  call->disarm();  // its alarm callback ends it
}

void CallStream::on_alarm(std::uint64_t request_id, bool fired) {
  std::shared_ptr<Waiting> call;
  bool expired = false;
  {
    std::lock_guard lock(mutex_);
    if (auto found = cancelled_.find(request_id); found != cancelled_.end()) {
      call = std::move(found->second);
      cancelled_.erase(found);
    } else if (fired) {
      call = take(request_id);
      expired = call != nullptr;
      if (expired) queue_write(Write{nullptr, request_id});
    }
  }
  if (!call) return;  // answered: the alarm was disarmed
  call->done(expired ? classify_status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded")
                     : classify_status(grpc::StatusCode::CANCELLED, "Cancelled"));
}

std::shared_ptr<CallStream::Waiting> CallStream::take(std::uint64_t request_id) {
  auto found = waiting_.find(request_id);
  if (found == waiting_.end()) return nullptr;
  auto call = std::move(found->second);
  waiting_.erase(found);
  return call;
}

void CallStream::queue_write(Write write) {
  if (ended_ || writes_done_) return;
  writes_.push_back(std::move(write));
  if (!writing_) start_next_write();
}

void CallStream::start_next_write() {
  while (!writes_.empty()) {
    Write write = std::move(writes_.front());
    writes_.pop_front();
    if (write.call) {
      // A call cancelled or expired before its turn to be written is not
      // sent. The time left is taken now: a call may wait here behind a
      // large one.
      auto found = waiting_.find(write.call->request.request_id());
      if (found == waiting_.end() || found->second != write.call) continue;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(write.call->deadline -
                                                                              core::SteadyClock::now())
                            .count();
      if (left <= 0) continue;  // its alarm ends it
      write.call->request.set_timeout_ms(static_cast<std::uint64_t>(left));
      writing_call_ = std::move(write.call);
      writing_ = true;
      StartWrite(&writing_call_->request);
      return;
    }
    cancel_frame_.Clear();
    cancel_frame_.set_request_id(write.cancel_id);
    cancel_frame_.set_cancel(true);
    writing_ = true;
    StartWrite(&cancel_frame_);
    return;
  }
  if (closing_ && !writes_done_ && !ended_) {
    writes_done_ = true;
    writing_ = true;
    StartWritesDone();
  }
}

void CallStream::OnWriteDone(bool ok) {
  std::lock_guard lock(mutex_);
  writing_ = false;
  writing_call_.reset();
  // A failed write: the stream is broken, its read side fails and OnDone
  // ends the waiting calls.
  if (ok && !ended_) start_next_write();
}

void CallStream::OnWritesDoneDone(bool) {
  std::lock_guard lock(mutex_);
  writing_ = false;
}

void CallStream::OnReadDone(bool ok) {
  if (!ok) {
    {
      std::lock_guard lock(mutex_);
      ended_ = true;
    }
    RemoveHold();  // OnDone follows once the write in flight, if any, is done
    return;
  }
  pb::ExecuteToolResponse reply;
  reply.Swap(&reply_);
  StartRead(&reply_);
  deliver(reply);
}

void CallStream::deliver(pb::ExecuteToolResponse& reply) {
  std::shared_ptr<Waiting> call;
  {
    std::lock_guard lock(mutex_);
    answered_ = true;
    call = take(reply.request_id());
  }
  if (!call) return;  // cancelled or expired meanwhile
  call->disarm();
  if (reply.status_code() != 0)
    return call->done(classify_status(static_cast<grpc::StatusCode>(reply.status_code()), reply.status_details()));
  const bool binary = reply.result().type_url() == wire::kBinaryTypeUrl;
  call->done(classify_response(reply.success(), std::move(*reply.mutable_result()->mutable_value()), binary,
                               reply.error_message()));
}

void CallStream::OnDone(const grpc::Status& status) {
  std::unordered_map<std::uint64_t, std::shared_ptr<Waiting>> left;
  std::vector<std::shared_ptr<Waiting>> cancelled;
  bool refused = false;
  {
    std::lock_guard lock(mutex_);
    left.swap(waiting_);
    // Cancelled calls whose alarm callback has not run end here: the
    // callback may find no stream left.
    for (auto& [id, call] : cancelled_) cancelled.push_back(std::move(call));
    cancelled_.clear();
    writes_.clear();
    ended_ = true;
    refused = status.error_code() == grpc::StatusCode::UNIMPLEMENTED && !answered_;
  }
  for (auto& call : cancelled) call->done(classify_status(grpc::StatusCode::CANCELLED, "Cancelled"));
  auto on_refused = std::move(on_refused_);
  if (refused && on_refused) {
    std::vector<Refused> calls;
    calls.reserve(left.size());
    for (auto& [id, call] : left) {
      call->disarm();
      calls.push_back(Refused{std::move(call->request), call->deadline, std::move(call->done),
                              [handle = call->handle](std::shared_ptr<core::CallHandle> unary) {
                                if (auto streamed = handle.lock()) streamed->redirect(std::move(unary));
                              }});
    }
    on_refused(std::move(calls));
  } else {
    // A clean end with calls left cannot come from our worker (it ends a
    // stream only when no call is left); treat it as a lost worker.
    auto code = status.ok() ? grpc::StatusCode::UNAVAILABLE : status.error_code();
    auto message = status.ok() ? std::string("the worker ended its call stream") : status.error_message();
    for (auto& [id, call] : left) {
      call->disarm();
      call->done(classify_status(code, message));
    }
  }
  self_.reset();  // the last reference may be this one
}

}  // namespace snakepit::transport
