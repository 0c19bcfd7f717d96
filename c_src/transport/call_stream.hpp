// One worker's ExecuteToolCalls stream (see the proto): the pool's unary
// calls to that worker as one message each way on one stream, matched by
// request_id. A unary RPC costs both ends a call object, headers, trailers
// and a deadline timer; this costs a message. Owns the write queue (one
// write in flight), the calls waiting for their reply, their deadlines
// (one alarm per stream, for the earliest), and ending those calls when
// the stream ends. A worker that does not serve the method (UNIMPLEMENTED
// before any reply) hands the calls back, to be sent as unary calls. Its
// operations complete on the NIF's queue thread (queue_thread.hpp).
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/transport.hpp"
#include "queue_thread.hpp"
#include "snakepit_bridge.grpc.pb.h"

namespace snakepit::transport {

class CallStream final : public std::enable_shared_from_this<CallStream> {
  struct Key {};  // only open() makes one

 public:
  using Done = core::WorkerConnection::Done;
  // A call handed back because the worker lacks the method. `redirect`
  // receives the handle of the unary call that replaces it.
  struct Refused {
    bridge::ExecuteToolRequest request;
    core::TimePoint deadline;
    Done done;
    std::function<void(std::shared_ptr<core::CallHandle>)> redirect;
  };
  using OnRefused = std::function<void(std::vector<Refused>&&)>;

  static std::shared_ptr<CallStream> open(bridge::BridgeService::Stub& stub, grpc::CompletionQueue& queue,
                                          OnRefused on_refused);
  CallStream(Key, grpc::CompletionQueue& queue, OnRefused on_refused)
      : queue_(queue), on_refused_(std::move(on_refused)) {}

  // Sends the call on the stream and takes `request` and `done`; nullptr
  // (both untouched) when the stream has ended: send a unary call instead.
  std::shared_ptr<core::CallHandle> submit(bridge::ExecuteToolRequest& request, core::TimePoint deadline, Done& done);
  // The connection is dropped: no more calls. The stream ends once the
  // worker answered the calls it has (it ends idle streams whose client
  // closed its side).
  void close() noexcept;
  // The handle's cancel: the call ends as CANCELLED and the worker is told
  // not to start it.
  void cancel(std::uint64_t request_id) noexcept;
  // True once it takes no more calls (its end, or close()).
  bool ended();

 private:
  struct Waiting;
  struct Alarm;
  struct Write {
    std::shared_ptr<Waiting> call;  // a call's request, or
    std::uint64_t cancel_id = 0;    // a cancel frame
  };

  // When the stream's alarm must go off, and which arming that is.
  struct AlarmPlan {
    std::uint64_t generation;
    core::TimePoint at;
  };

  void on_started(bool ok);
  void on_read(bool ok);
  void on_written(bool ok);
  void on_finished();

  std::shared_ptr<Waiting> take(std::uint64_t request_id);  // under mutex_
  // Under mutex_: the alarm to set so that it goes off by `at`, if the
  // armed one goes off later (or none is armed).
  std::optional<AlarmPlan> plan_alarm(core::TimePoint at);
  // Not under mutex_: sets a planned alarm unless a later plan was set.
  void set_alarm(AlarmPlan plan);
  // The alarm of that plan went off: ends the cancelled calls and those
  // past their deadline, and plans the next.
  void on_alarm(std::uint64_t generation);
  void queue_write(Write write);  // under mutex_
  void start_next_write();        // under mutex_
  void finish_once_idle();        // under mutex_
  void deliver(bridge::ExecuteToolResponse& reply);

  grpc::CompletionQueue& queue_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<bridge::ExecuteToolRequest, bridge::ExecuteToolResponse>> stream_;
  QueueOp started_{[this](bool ok) { on_started(ok); }};
  QueueOp read_{[this](bool ok) { on_read(ok); }};
  QueueOp written_{[this](bool ok) { on_written(ok); }};
  QueueOp finished_{[this](bool) { on_finished(); }};
  OnRefused on_refused_;
  std::mutex mutex_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Waiting>> waiting_;
  std::set<std::pair<core::TimePoint, std::uint64_t>> deadlines_;  // of the waiting calls
  std::vector<std::shared_ptr<Waiting>> cancelled_;                // until the alarm ends them
  // A grpc::Alarm per call cost every call a timer and a cancel; one alarm
  // per stream, armed for the earliest deadline, is re-armed only when an
  // earlier deadline comes (mixed timeouts, a cancel) or after it went off.
  std::optional<core::TimePoint> alarm_at_;  // when the planned alarm goes off
  std::uint64_t alarm_generation_ = 0;       // of the newest plan
  std::mutex alarm_mutex_;                   // never held with mutex_, nor while setting
  std::shared_ptr<Alarm> alarm_;             // under alarm_mutex_
  std::uint64_t alarm_set_generation_ = 0;   // under alarm_mutex_
  std::deque<Write> writes_;
  bridge::ExecuteToolRequest cancel_frame_;
  std::shared_ptr<Waiting> writing_call_;
  bool started_ok_ = false;  // StartCall completed: writes and reads may begin
  bool writing_ = false;
  bool closing_ = false;  // no more calls; half-close once the writes drained
  bool writes_done_ = false;
  bool ended_ = false;      // the read side failed: the stream is over
  bool finishing_ = false;  // Finish was asked for
  bool answered_ = false;   // a reply came: the worker serves the method
  bridge::ExecuteToolResponse reply_;
  grpc::Status status_;               // set by Finish
  std::shared_ptr<CallStream> self_;  // released once finished
};

}  // namespace snakepit::transport
