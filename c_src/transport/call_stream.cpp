// CallStream (call_stream.hpp): the writes, replies, deadlines and end of
// one worker's ExecuteToolCalls stream, on the queue thread's completions.
#include "call_stream.hpp"

#include <grpcpp/alarm.h>

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
};

// The grpc::Alarm of one plan and its tag. It keeps itself alive until its
// tag completed: gRPC completes a cancelled alarm's tag too.
struct CallStream::Alarm {
  Alarm(std::weak_ptr<CallStream> stream, std::uint64_t generation) : stream(std::move(stream)), generation(generation) {}

  grpc::Alarm alarm;
  const std::weak_ptr<CallStream> stream;
  const std::uint64_t generation;
  std::shared_ptr<Alarm> self;  // released when its tag is done
  QueueOp went_off{[this](bool fired) {
    auto keep = std::move(self);
    if (!fired) return;  // replaced by a newer plan
    if (auto owner = stream.lock()) owner->on_alarm(generation);
  }};
};

std::shared_ptr<CallStream> CallStream::open(pb::BridgeService::Stub& stub, grpc::CompletionQueue& queue,
                                             OnRefused on_refused) {
  auto stream = std::make_shared<CallStream>(Key{}, queue, std::move(on_refused));
  stream->self_ = stream;
  stream->stream_ = stub.PrepareAsyncExecuteToolCalls(&stream->context_, &queue);
  stream->stream_->StartCall(stream->started_.tag());
  return stream;
}

// Reads and writes begin once the call started: gRPC takes no other
// operation before.
void CallStream::on_started(bool ok) {
  std::lock_guard lock(mutex_);
  started_ok_ = ok;
  if (!ok) {
    ended_ = true;
    return finish_once_idle();
  }
  stream_->Read(&reply_, read_.tag());
  if (!writing_) start_next_write();
}

std::shared_ptr<core::CallHandle> CallStream::submit(pb::ExecuteToolRequest& request, core::TimePoint deadline,
                                                     Done& done) {
  const auto id = request.request_id();
  std::optional<AlarmPlan> plan;
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
    deadlines_.emplace(deadline, id);
    plan = plan_alarm(deadline);
    queue_write(Write{call});
  }
  if (plan) set_alarm(*plan);
  return handle;
}

bool CallStream::ended() {
  std::lock_guard lock(mutex_);
  return ended_ || closing_;
}

void CallStream::close() noexcept {
  std::lock_guard lock(mutex_);
  closing_ = true;
  if (started_ok_ && !writing_ && !ended_) start_next_write();
}

// The call ends as CANCELLED when the alarm, set to go off at once,
// completes on the queue thread: cancel() never runs `done` on the
// caller's thread (as a unary call's TryCancel does not).
void CallStream::cancel(std::uint64_t request_id) noexcept {
  std::optional<AlarmPlan> plan;
  {
    std::lock_guard lock(mutex_);
    auto call = take(request_id);
    if (!call) return;
    cancelled_.push_back(std::move(call));
    queue_write(Write{nullptr, request_id});  // not started yet: it never will be
    plan = plan_alarm(core::SteadyClock::now());
  }
  if (plan) set_alarm(*plan);
}

std::optional<CallStream::AlarmPlan> CallStream::plan_alarm(core::TimePoint at) {
  if (alarm_at_ && *alarm_at_ <= at) return std::nullopt;
  alarm_at_ = at;
  return AlarmPlan{++alarm_generation_, at};
}

void CallStream::set_alarm(AlarmPlan plan) {
  auto alarm = std::make_shared<Alarm>(weak_from_this(), plan.generation);
  alarm->self = alarm;
  alarm->alarm.Set(&queue_, to_system(plan.at), alarm->went_off.tag());
  {
    std::lock_guard lock(alarm_mutex_);
    if (plan.generation > alarm_set_generation_) {
      alarm_set_generation_ = plan.generation;
      alarm_.swap(alarm);
    }
  }
  // `alarm` is now the one replaced, or this plan if a newer one was set
  // first.
  if (alarm) alarm->alarm.Cancel();
}

void CallStream::on_alarm(std::uint64_t generation) {
  std::vector<std::shared_ptr<Waiting>> cancelled, expired;
  std::optional<AlarmPlan> plan;
  {
    std::lock_guard lock(mutex_);
    if (generation != alarm_generation_) return;  // a newer plan goes off by then
    alarm_at_.reset();
    cancelled.swap(cancelled_);
    const auto now = core::SteadyClock::now();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      const auto id = deadlines_.begin()->second;
      deadlines_.erase(deadlines_.begin());  // first: a stray entry cannot stall the loop
      if (auto call = take(id)) {
        expired.push_back(std::move(call));
        queue_write(Write{nullptr, id});
      }
    }
    if (!deadlines_.empty()) plan = plan_alarm(deadlines_.begin()->first);
  }
  if (plan) set_alarm(*plan);
  for (auto& call : cancelled) call->done(classify_status(grpc::StatusCode::CANCELLED, "Cancelled"));
  for (auto& call : expired) call->done(classify_status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"));
}

std::shared_ptr<CallStream::Waiting> CallStream::take(std::uint64_t request_id) {
  auto found = waiting_.find(request_id);
  if (found == waiting_.end()) return nullptr;
  auto call = std::move(found->second);
  waiting_.erase(found);
  deadlines_.erase({call->deadline, request_id});
  return call;
}

void CallStream::queue_write(Write write) {
  if (ended_ || writes_done_) return;
  writes_.push_back(std::move(write));
  if (started_ok_ && !writing_) start_next_write();
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
      stream_->Write(writing_call_->request, written_.tag());
      return;
    }
    cancel_frame_.Clear();
    cancel_frame_.set_request_id(write.cancel_id);
    cancel_frame_.set_cancel(true);
    writing_ = true;
    stream_->Write(cancel_frame_, written_.tag());
    return;
  }
  if (closing_ && !writes_done_ && !ended_) {
    writes_done_ = true;
    writing_ = true;
    stream_->WritesDone(written_.tag());
  }
}

// A write, a cancel frame or the half-close completed.
void CallStream::on_written(bool ok) {
  std::lock_guard lock(mutex_);
  writing_ = false;
  writing_call_.reset();
  if (ended_) return finish_once_idle();
  // A failed write: the stream is broken, its read side fails and the
  // finish ends the waiting calls.
  if (ok) start_next_write();
}

void CallStream::on_read(bool ok) {
  if (!ok) {
    std::lock_guard lock(mutex_);
    ended_ = true;
    return finish_once_idle();
  }
  pb::ExecuteToolResponse reply;
  reply.Swap(&reply_);
  stream_->Read(&reply_, read_.tag());
  deliver(reply);
}

// The status is asked for once the read side failed and no write is in
// flight (gRPC's order for a bidirectional stream).
void CallStream::finish_once_idle() {
  if (writing_ || finishing_) return;
  finishing_ = true;
  stream_->Finish(&status_, finished_.tag());
}

void CallStream::deliver(pb::ExecuteToolResponse& reply) {
  std::shared_ptr<Waiting> call;
  {
    std::lock_guard lock(mutex_);
    answered_ = true;
    call = take(reply.request_id());
  }
  if (!call) return;  // cancelled or expired meanwhile
  if (reply.status_code() != 0)
    return call->done(classify_status(static_cast<grpc::StatusCode>(reply.status_code()), reply.status_details()));
  const bool binary = reply.result().type_url() == wire::kBinaryTypeUrl;
  call->done(classify_response(reply.success(), std::move(*reply.mutable_result()->mutable_value()), binary,
                               reply.error_message()));
}

void CallStream::on_finished() {
  const grpc::Status& status = status_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Waiting>> left;
  std::vector<std::shared_ptr<Waiting>> cancelled;
  bool refused = false;
  {
    std::lock_guard lock(mutex_);
    left.swap(waiting_);
    deadlines_.clear();
    // Cancelled calls the alarm has not ended end here: when it goes off it
    // may find no stream left.
    cancelled.swap(cancelled_);
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
    for (auto& [id, call] : left) call->done(classify_status(code, message));
  }
  self_.reset();  // the last reference may be this one
}

}  // namespace snakepit::transport
