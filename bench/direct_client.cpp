// The "limit" side of the benchmarks: a small C++ gRPC client that calls
// Python workers (priv/python/grpc_server.py) directly, with no BEAM and no
// pool in between.
//
//   direct_client run --python PY --workers N [--case SPEC]... -- WORKER_ARGS...
//     Starts N workers: PY WORKER_ARGS (the pool's command line after the
//     interpreter, which bench/run.exs takes from Snakepit.Config) plus what
//     the pool's spawner adds per worker (--socket in a private directory,
//     --worker-id, the ready fd and lifeline of c_src/core/child_fds.hpp), then runs every --case in order and prints one line per
//     case:  RESULT name=... calls=... calls_per_s=... p50_us=... ...
//
//     SPEC is comma-separated key=value: name, tool (ping), concurrency (1),
//     cap (calls in flight per worker, 0 = unlimited; default 1 like the
//     process profile), warmup (s, 1), duration (s, 3), bytes (0: no
//     parameters; n: parameter "data" = a JSON string of n 'x'), stream
//     (0: one unary RPC per call; 1: calls on each worker's
//     ExecuteToolCalls stream, as the runtime sends them), threads (0: a
//     caller is a counter, its next call issued on the gRPC thread that
//     took its reply; 1: a caller is a thread that blocks until its reply
//     wakes it, as a BEAM process waits in `receive`), queue (with stream=1;
//     0: the streams on gRPC's callback API; 1: on the generic async API,
//     one CompletionQueue drained by one thread of ours, as the runtime's
//     since bench/README "One queue thread in the BEAM"), callback_threads
//     (with queue=1: 1 makes one callback-API call per channel first, so
//     gRPC's callback threads run too, as they did in the BEAM before).
//
//     C callers each loop on one call at a time. A caller's call goes to the
//     least-loaded worker that has a free slot, or waits in one FIFO queue
//     until a slot frees: the dispatch the pool does. Latency runs from the
//     moment the caller issues the call to its reply, queueing included.
//
//   direct_client startup --python PY [--repeat N] -- WORKER_ARGS...
//     Spawns one worker N times, one after the other, and prints the time
//     from spawn to its ready line:  RESULT name=startup run=i ms=...
//
// Workers inherit this process's environment (the bench sets PYTHONPATH and
// friends). They die with this process: the lifeline pipe's write end is
// only held here.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <unordered_map>
#include <functional>
#include <mutex>
#include <semaphore>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../c_src/core/child_fds.hpp"
#include "../c_src/core/wire.hpp"
#include "write_queue.hpp"
#include "snakepit_bridge.grpc.pb.h"

extern char** environ;

namespace {

namespace pb = ::snakepit::bridge;
using Clock = std::chrono::steady_clock;

using snakepit::core::kLifelineFd;
using snakepit::core::kReadyFd;

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "direct_client: %s\n", message.c_str());
  std::exit(1);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ------------------------------------------------------------------ workers

// An fd number >= 10, close-on-exec, so the dup2 onto 3 and 4 in the child
// cannot clobber one another.
int high_fd(int fd) {
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  if (moved < 0) die(std::string("fcntl: ") + std::strerror(errno));
  ::close(fd);
  return moved;
}

struct Worker {
  pid_t pid = -1;
  int lifeline_write = -1;
  std::string socket;
  double ready_ms = 0;
};

struct WorkerSpec {
  std::string python, dir;
  std::vector<std::string> worker_args;  // after the interpreter
};

Worker spawn_worker(const WorkerSpec& spec, const std::string& id) {
  int ready[2], lifeline[2];
  if (::pipe(ready) != 0 || ::pipe(lifeline) != 0) die(std::string("pipe: ") + std::strerror(errno));
  const int ready_read = high_fd(ready[0]), ready_write = high_fd(ready[1]);
  const int lifeline_read = high_fd(lifeline[0]), lifeline_write = high_fd(lifeline[1]);

  Worker worker;
  worker.socket = spec.dir + "/" + id + ".sock";
  std::vector<std::string> args = {spec.python};
  args.insert(args.end(), spec.worker_args.begin(), spec.worker_args.end());
  args.insert(args.end(), {"--socket", worker.socket, "--worker-id", id, "--ready-fd", std::to_string(kReadyFd),
                           "--lifeline-fd", std::to_string(kLifelineFd)});
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, ready_write, kReadyFd);
  posix_spawn_file_actions_adddup2(&actions, lifeline_read, kLifelineFd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);

  const auto started = Clock::now();
  const int rc = ::posix_spawn(&worker.pid, spec.python.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(ready_write);
  ::close(lifeline_read);
  if (rc != 0) die("cannot spawn " + spec.python + ": " + std::strerror(rc));
  worker.lifeline_write = lifeline_write;

  // Wait for the ready line (60 s at most).
  std::string line;
  char buffer[4096];
  while (line.find('\n') == std::string::npos) {
    pollfd pfd{ready_read, POLLIN, 0};
    const int remaining = 60000 - static_cast<int>(seconds_since(started) * 1000);
    if (remaining <= 0 || ::poll(&pfd, 1, remaining) <= 0) die("worker " + id + " did not report ready in 60 s");
    const ssize_t n = ::read(ready_read, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    line.append(buffer, static_cast<std::size_t>(n));
  }
  worker.ready_ms = seconds_since(started) * 1000;
  ::close(ready_read);
  if (line.find("\"status\":\"ready\"") == std::string::npos)
    die("worker " + id + " failed to start: " + (line.empty() ? "ready pipe closed" : line));
  return worker;
}

// Closing the lifeline makes the worker kill its own process group.
void stop_worker(Worker& worker) {
  if (worker.lifeline_write >= 0) ::close(worker.lifeline_write);
  worker.lifeline_write = -1;
  if (worker.pid > 0) {
    const auto started = Clock::now();
    while (::waitpid(worker.pid, nullptr, WNOHANG) == 0) {
      if (seconds_since(started) > 5) {
        ::kill(worker.pid, SIGKILL);
        ::waitpid(worker.pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  worker.pid = -1;
  ::unlink(worker.socket.c_str());
}

// utime + stime of a process, in microseconds.
double process_cpu_us(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const auto close_paren = text.rfind(')');
  if (close_paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(close_paren + 2));
  std::string field;
  // Fields after "pid (comm) ": state is field 3; utime and stime are 14, 15.
  unsigned long long utime = 0, stime = 0;
  for (int index = 3; index <= 15 && fields >> field; ++index) {
    if (index == 14) utime = std::stoull(field);
    if (index == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) * 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Busy time of the whole machine (all cores) from /proc/stat, in microseconds.
double machine_busy_us() {
  std::ifstream file("/proc/stat");
  std::string label;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  file >> label >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  return static_cast<double>(user + nice + system + irq + softirq + steal) * 1e6 /
         static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double self_cpu_us() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto us = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) * 1e6 + static_cast<double>(tv.tv_usec); };
  return us(usage.ru_utime) + us(usage.ru_stime);
}

// ------------------------------------------------------------------- load

struct CaseSpec {
  std::string name = "case", tool = "ping";
  int concurrency = 1, cap = 1;
  bool stream = false;   // calls on each worker's ExecuteToolCalls stream
  bool threads = false;  // a thread per caller, woken by its reply
  bool queue = false;             // stream=1 on one CompletionQueue thread of ours
  bool callback_threads = false;  // queue=1: gRPC's callback threads running too
  double warmup = 1, duration = 3;
  std::size_t bytes = 0;
};

CaseSpec parse_case(const std::string& text) {
  CaseSpec spec;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) die("bad --case item: " + item);
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    try {
      if (key == "name") spec.name = value;
      else if (key == "tool") spec.tool = value;
      else if (key == "concurrency") spec.concurrency = std::stoi(value);
      else if (key == "cap") spec.cap = std::stoi(value);
      else if (key == "warmup") spec.warmup = std::stod(value);
      else if (key == "duration") spec.duration = std::stod(value);
      else if (key == "bytes") spec.bytes = std::stoull(value);
      else if (key == "stream") spec.stream = value == "1";
      else if (key == "threads") spec.threads = value == "1";
      else if (key == "queue") spec.queue = value == "1";
      else if (key == "callback_threads") spec.callback_threads = value == "1";
      else die("unknown --case key: " + key);
    } catch (const std::logic_error&) {
      die("bad --case value: " + item);
    }
  }
  if (spec.concurrency < 1 || spec.cap < 0 || spec.duration <= 0 || spec.warmup < 0) die("bad --case: " + text);
  if (spec.queue && !spec.stream) die("queue=1 needs stream=1: " + text);
  if (spec.callback_threads && !spec.queue) die("callback_threads=1 needs queue=1: " + text);
  return spec;
}

// The calls waiting for their reply on a stream, by request_id.
using ReplyDone = std::function<void(pb::ExecuteToolResponse&&)>;
using WaitingCalls = std::unordered_map<std::uint64_t, ReplyDone>;

// Takes the call waiting for `request_id`, or an empty function.
ReplyDone take_waiting(WaitingCalls& waiting, std::uint64_t request_id) {
  auto it = waiting.find(request_id);
  if (it == waiting.end()) return {};
  ReplyDone done = std::move(it->second);
  waiting.erase(it);
  return done;
}

// A reply arrived in `slot`: takes its caller (under `mutex`), re-arms the
// stream's read with `read_next`, then answers the caller.
template <class ReadNext>
void deliver_reply(std::mutex& mutex, WaitingCalls& waiting, pb::ExecuteToolResponse& slot, ReadNext read_next) {
  ReplyDone done;
  {
    std::lock_guard lock(mutex);
    done = take_waiting(waiting, slot.request_id());
  }
  pb::ExecuteToolResponse response = std::move(slot);
  slot.Clear();
  read_next();
  if (done) done(std::move(response));
}

// The worker's ExecuteToolCalls stream (case key `stream=1`): calls as
// messages on one stream per worker, matched by request_id, one write in
// flight, as the runtime sends them to a worker that serves it.
class CallsStream final : public grpc::ClientBidiReactor<pb::ExecuteToolRequest, pb::ExecuteToolResponse> {
 public:
  using Done = ReplyDone;
  explicit CallsStream(pb::BridgeService::Stub& stub) {
    stub.async()->ExecuteToolCalls(&context_, this);
    StartRead(&response_);
    StartCall();
  }
  void send(pb::ExecuteToolRequest request, Done done) {
    std::lock_guard lock(mutex_);
    waiting_[request.request_id()] = std::move(done);
    if (writes_.push(std::move(request))) StartWrite(&writes_.current());
  }
  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mutex_);
    if (ok && writes_.written()) StartWrite(&writes_.current());
  }
  void OnReadDone(bool ok) override {
    if (ok) deliver_reply(mutex_, waiting_, response_, [this] { StartRead(&response_); });
  }
  void OnDone(const grpc::Status&) override {}

 private:
  grpc::ClientContext context_;
  std::mutex mutex_;
  pb::ExecuteToolResponse response_;
  WriteQueue<pb::ExecuteToolRequest> writes_;
  WaitingCalls waiting_;
};

// queue=1: the same stream on the generic async API. One CompletionQueue
// and one thread draining it serve every stream, so no poller is handed
// between gRPC's callback threads. A tag is a QueueOp whose `done` runs
// on that thread.
struct QueueOp {
  std::function<void(bool)> done;
};

class QueueThread {
 public:
  QueueThread() : thread_([this] { drain(); }) {}
  grpc::CompletionQueue& queue() { return queue_; }

 private:
  void drain() {
    void* tag = nullptr;
    bool ok = false;
    while (queue_.Next(&tag, &ok)) static_cast<QueueOp*>(tag)->done(ok);
  }
  grpc::CompletionQueue queue_;
  std::thread thread_;  // never joined: the process ends with std::_Exit
};

class QueueCallsStream {
 public:
  using Done = ReplyDone;
  QueueCallsStream(pb::BridgeService::Stub& stub, grpc::CompletionQueue& queue) {
    started_.done = [this](bool) {
      stream_->Read(&response_, &read_);
      started.release();
    };
    read_.done = [this](bool ok) {
      if (ok) deliver_reply(mutex_, waiting_, response_, [this] { stream_->Read(&response_, &read_); });
    };
    written_.done = [this](bool ok) {
      std::lock_guard lock(mutex_);
      if (ok && writes_.written()) stream_->Write(writes_.current(), &written_);
    };
    stream_ = stub.PrepareAsyncExecuteToolCalls(&context_, &queue);
    stream_->StartCall(&started_);
  }
  void send(pb::ExecuteToolRequest request, Done done) {
    std::lock_guard lock(mutex_);
    waiting_[request.request_id()] = std::move(done);
    if (writes_.push(std::move(request))) stream_->Write(writes_.current(), &written_);
  }
  std::binary_semaphore started{0};  // released once the call started: send() after that

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<pb::ExecuteToolRequest, pb::ExecuteToolResponse>> stream_;
  QueueOp started_, read_, written_;
  std::mutex mutex_;
  pb::ExecuteToolResponse response_;
  WriteQueue<pb::ExecuteToolRequest> writes_;
  WaitingCalls waiting_;
};

// callback_threads=1: one callback-API call on the channel, which starts
// gRPC's callback threads for the rest of the process.
void start_callback_threads(pb::BridgeService::Stub& stub) {
  std::binary_semaphore replied(0);
  grpc::ClientContext context;
  pb::ExecuteToolRequest request;
  request.set_tool_name("ping");
  pb::ExecuteToolResponse response;
  stub.async()->ExecuteTool(&context, &request, &response, [&](grpc::Status) { replied.release(); });
  replied.acquire();
}

struct Target {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::BridgeService::Stub> stub;
  std::unique_ptr<CallsStream> calls;              // opened for a stream=1 case
  std::unique_ptr<QueueCallsStream> queue_calls;  // opened for a queue=1 case
  int inflight = 0;
};

class LoadRun {
 public:
  LoadRun(std::vector<Target>& targets, const CaseSpec& spec, const pb::ExecuteToolRequest& request)
      : targets_(targets), spec_(spec), request_(request), issued_(static_cast<std::size_t>(spec.concurrency)) {
    if (spec.threads)
      for (int caller = 0; caller < spec.concurrency; ++caller)
        replied_.push_back(std::make_unique<std::binary_semaphore>(0));
    // The measurement window is fixed up front: warmup, then duration.
    auto secs = [](double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); };
    window_start_ = Clock::now() + secs(spec.warmup);
    window_end_ = window_start_ + secs(spec.duration);
  }

  struct Result {
    std::uint64_t calls = 0, errors = 0, bytes = 0;
    double seconds = 0;
    std::vector<double> latencies_us;
  };

  Result run() {
    if (spec_.threads) return run_threads();
    std::vector<std::pair<int, int>> starts;
    {
      std::lock_guard lock(mutex_);
      for (int caller = 0; caller < spec_.concurrency; ++caller) {
        issued_[static_cast<std::size_t>(caller)] = Clock::now();
        queue_.push_back(caller);
      }
      dispatch(Clock::now(), starts);
    }
    for (auto [target, caller] : starts) start_call(target, caller);
    std::unique_lock lock(mutex_);
    while (Clock::now() < window_end_ || outstanding_ > 0) done_.wait_for(lock, std::chrono::milliseconds(50));
    result_.seconds = std::chrono::duration<double>(window_end_ - window_start_).count();
    return std::move(result_);
  }

  // threads=1: each caller a thread issuing its next call once woken.
  Result run_threads() {
    std::vector<std::thread> callers;
    for (int caller = 0; caller < spec_.concurrency; ++caller)
      callers.emplace_back([this, caller] {
        const auto index = static_cast<std::size_t>(caller);
        while (Clock::now() < window_end_) {
          std::vector<std::pair<int, int>> starts;
          {
            std::lock_guard lock(mutex_);
            issued_[index] = Clock::now();
            queue_.push_back(caller);
            dispatch(Clock::now(), starts);
          }
          for (auto [target, next] : starts) start_call(target, next);
          replied_[index]->acquire();
        }
      });
    for (auto& caller : callers) caller.join();
    std::unique_lock lock(mutex_);
    while (outstanding_ > 0) done_.wait_for(lock, std::chrono::milliseconds(50));
    result_.seconds = std::chrono::duration<double>(window_end_ - window_start_).count();
    return std::move(result_);
  }

  Clock::time_point window_start() const { return window_start_; }
  Clock::time_point window_end() const { return window_end_; }

 private:
  struct Call {
    grpc::ClientContext context;
    pb::ExecuteToolResponse response;
    int target = 0, caller = 0;
  };

  // Under the lock: pair waiting callers with free slots.
  void dispatch(Clock::time_point now, std::vector<std::pair<int, int>>& starts) {
    if (now >= window_end_) {
      // A caller thread waiting for a call that will not start is let go.
      if (spec_.threads)
        for (int caller : queue_) replied_[static_cast<std::size_t>(caller)]->release();
      queue_.clear();
      return;
    }
    while (!queue_.empty()) {
      int best = -1;
      const int n = static_cast<int>(targets_.size());
      for (int i = 0; i < n; ++i) {
        const int index = (rotation_ + i) % n;
        const auto& target = targets_[static_cast<std::size_t>(index)];
        if (spec_.cap > 0 && target.inflight >= spec_.cap) continue;
        if (best < 0 || target.inflight < targets_[static_cast<std::size_t>(best)].inflight) best = index;
        if (target.inflight == 0) break;
      }
      if (best < 0) return;
      ++rotation_;
      ++targets_[static_cast<std::size_t>(best)].inflight;
      ++outstanding_;
      starts.emplace_back(best, queue_.front());
      queue_.pop_front();
    }
  }

  void start_call(int target, int caller) {
    auto* call = new Call;
    call->target = target;
    call->caller = caller;
    auto& worker = targets_[static_cast<std::size_t>(target)];
    if (spec_.stream) {
      pb::ExecuteToolRequest request = request_;
      request.set_request_id(++next_id_);
      request.set_timeout_ms(120'000);
      auto done = [this, call](pb::ExecuteToolResponse&& response) {
        call->response = std::move(response);
        finish(call, grpc::Status::OK);
      };
      if (spec_.queue) worker.queue_calls->send(std::move(request), std::move(done));
      else worker.calls->send(std::move(request), std::move(done));
      return;
    }
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    worker.stub->async()->ExecuteTool(
        &call->context, &request_, &call->response, [this, call](grpc::Status status) { finish(call, status); });
  }

  void finish(Call* call, const grpc::Status& status) {
    const auto now = Clock::now();
    const bool ok = status.ok() && call->response.success() &&
                    call->response.result().value().size() >= spec_.bytes;
    if (!ok && errors_reported_++ < 3)
      std::fprintf(stderr, "direct_client: call failed: %s %s\n", status.error_message().c_str(),
                   call->response.error_message().c_str());
    std::vector<std::pair<int, int>> starts;
    {
      std::lock_guard lock(mutex_);
      --targets_[static_cast<std::size_t>(call->target)].inflight;
      --outstanding_;
      if (now >= window_start_ && now < window_end_) {
        const auto caller = static_cast<std::size_t>(call->caller);
        result_.latencies_us.push_back(std::chrono::duration<double, std::micro>(now - issued_[caller]).count());
        if (ok) {
          ++result_.calls;
          result_.bytes += spec_.bytes;
        } else {
          ++result_.errors;
        }
      }
      if (now < window_end_ && !spec_.threads) {
        issued_[static_cast<std::size_t>(call->caller)] = now;
        queue_.push_back(call->caller);
      }
      dispatch(now, starts);
      // The last touch of this run unless a call starts below: once the
      // lock is released with nothing outstanding, run() may return and
      // the run be destroyed (touching spec_ or replied_ after that was a
      // use after free, seen once as a SIGSEGV after a case's last call).
      if (spec_.threads) replied_[static_cast<std::size_t>(call->caller)]->release();
      if (outstanding_ == 0) done_.notify_all();
    }
    delete call;
    for (auto [target, caller] : starts) start_call(target, caller);
  }

  std::vector<Target>& targets_;
  const CaseSpec spec_;
  const pb::ExecuteToolRequest& request_;
  std::mutex mutex_;
  std::condition_variable done_;
  std::deque<int> queue_;
  std::vector<Clock::time_point> issued_;
  std::vector<std::unique_ptr<std::binary_semaphore>> replied_;  // threads=1: a caller's reply came
  Clock::time_point window_start_, window_end_;
  int outstanding_ = 0;
  int rotation_ = 0;
  std::atomic<std::uint64_t> next_id_{0};
  std::atomic<int> errors_reported_{0};
  Result result_;
};

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

pb::ExecuteToolRequest make_request(const CaseSpec& spec) {
  pb::ExecuteToolRequest request;
  request.set_tool_name(spec.tool);
  if (spec.bytes > 0) {
    // {"data": "xxx..."}, as the runtime sends a one-parameter call.
    std::string json;
    json.reserve(spec.bytes + 12);
    json.append(R"({"data":")");
    json.append(spec.bytes, 'x');
    json.append(R"("})");
    request.set_parameters_json(std::move(json));
  }
  return request;
}

std::string make_runtime_dir() {
  char pattern[] = "/tmp/snakepit-bench-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) die(std::string("mkdtemp: ") + std::strerror(errno));
  return pattern;
}

int run_command(const WorkerSpec& base, int worker_count, const std::vector<CaseSpec>& cases) {
  WorkerSpec spec = base;
  spec.dir = make_runtime_dir();
  std::vector<Worker> workers;
  for (int i = 0; i < worker_count; ++i) workers.push_back(spawn_worker(spec, "direct_" + std::to_string(i + 1)));

  std::vector<Target> targets;
  for (const auto& worker : workers) {
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(-1);
    arguments.SetMaxSendMessageSize(-1);
    Target target;
    target.channel =
        grpc::CreateCustomChannel("unix:" + worker.socket, grpc::InsecureChannelCredentials(), arguments);
    if (!target.channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)))
      die("cannot connect to " + worker.socket);
    target.stub = pb::BridgeService::NewStub(target.channel);
    targets.push_back(std::move(target));
  }

  for (const auto& spec_case : cases) {
    const auto request = make_request(spec_case);
    for (auto& target : targets) {
      if (spec_case.queue && !target.queue_calls) {
        static QueueThread queue_thread;
        if (spec_case.callback_threads) start_callback_threads(*target.stub);
        target.queue_calls = std::make_unique<QueueCallsStream>(*target.stub, queue_thread.queue());
        target.queue_calls->started.acquire();
      } else if (spec_case.stream && !spec_case.queue && !target.calls) {
        target.calls = std::make_unique<CallsStream>(*target.stub);
      }
    }
    LoadRun run(targets, spec_case, request);
    // CPU is sampled by this thread at the window's edges.
    struct Sample {
      double client = 0, workers = 0, machine = 0;
    } first, last;
    auto sample = [&](Sample& out) {
      out.client = self_cpu_us();
      for (const auto& worker : workers) out.workers += process_cpu_us(worker.pid);
      out.machine = machine_busy_us();
    };
    std::thread sampler([&] {
      std::this_thread::sleep_until(run.window_start());
      sample(first);
      std::this_thread::sleep_until(run.window_end());
      sample(last);
    });
    auto result = run.run();
    sampler.join();
    std::sort(result.latencies_us.begin(), result.latencies_us.end());
    double mean = 0;
    for (double value : result.latencies_us) mean += value;
    if (!result.latencies_us.empty()) mean /= static_cast<double>(result.latencies_us.size());
    std::printf(
        "RESULT name=%s tool=%s concurrency=%d cap=%d bytes=%zu calls=%llu errors=%llu seconds=%.3f "
        "calls_per_s=%.1f mb_per_s=%.3f p50_us=%.1f p99_us=%.1f mean_us=%.1f client_cpu_us=%.0f "
        "workers_cpu_us=%.0f machine_cpu_us=%.0f\n",
        spec_case.name.c_str(), spec_case.tool.c_str(), spec_case.concurrency, spec_case.cap, spec_case.bytes,
        static_cast<unsigned long long>(result.calls), static_cast<unsigned long long>(result.errors),
        result.seconds, static_cast<double>(result.calls) / result.seconds,
        static_cast<double>(result.bytes) / result.seconds / 1e6, percentile(result.latencies_us, 0.50),
        percentile(result.latencies_us, 0.99), mean, last.client - first.client, last.workers - first.workers,
        last.machine - first.machine);
    std::fflush(stdout);
  }

  // The channels stay alive until the process exits. A call's ClientContext
  // also holds its channel, and the context is deleted in the completion
  // callback on one of gRPC's callback threads; if that dropped the last
  // reference, the channel (and with the last channel gRPC's callback
  // completion queue and its threads) would be torn down from one of those
  // very threads, which gRPC 1.51 does not survive (grpc/grpc PR #32584).
  for (auto& worker : workers) stop_worker(worker);
  ::rmdir(spec.dir.c_str());
  return 0;
}

int startup_command(const WorkerSpec& base, int repeat) {
  WorkerSpec spec = base;
  spec.dir = make_runtime_dir();
  for (int run = 1; run <= repeat; ++run) {
    Worker worker = spawn_worker(spec, "startup_" + std::to_string(run));
    std::printf("RESULT name=startup run=%d ms=%.1f\n", run, worker.ready_ms);
    std::fflush(stdout);
    stop_worker(worker);
  }
  ::rmdir(spec.dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) die("usage: direct_client run|startup --python PY [options] -- WORKER_ARGS...");
  const std::string command = argv[1];
  WorkerSpec spec;
  int workers = 2, repeat = 3;
  std::vector<CaseSpec> cases;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + arg);
      return argv[++i];
    };
    if (arg == "--") {
      spec.worker_args.assign(argv + i + 1, argv + argc);
      break;
    }
    if (arg == "--python") spec.python = value();
    else if (arg == "--workers") workers = std::stoi(value());
    else if (arg == "--repeat") repeat = std::stoi(value());
    else if (arg == "--case") cases.push_back(parse_case(value()));
    else die("unknown argument " + arg);
  }
  if (spec.python.empty() || spec.worker_args.empty()) die("--python and the worker's arguments after -- are required");
  ::signal(SIGPIPE, SIG_IGN);
  int status = 0;
  if (command == "run") status = run_command(spec, std::max(workers, 1), cases);
  else if (command == "startup") status = startup_command(spec, std::max(repeat, 1));
  else die("unknown command " + command);
  // Skip static destructors: gRPC's internal threads may still be winding
  // down, and tearing the library down under them can crash at exit.
  std::fflush(stdout);
  std::_Exit(status);
}
