// The NIF boundary: every NIF body runs inside boundary<F>, so no C++
// exception unwinds through the C frame of a NIF (that aborts the VM). A
// bad argument (BadArg, thrown by ArgReader) raises an ArgumentError that
// names the argument; any other exception becomes an error value.
#pragma once

#include <erl_nif.h>

#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "nif_state.hpp"
#include "reply_terms.hpp"

namespace snakepit::nif {

struct BadArg {
  int index;             // 0-based position in argv
  const char* expected;  // "a pool", "a non-negative integer (request id)", ...
};

using NifFn = ERL_NIF_TERM (*)(ErlNifEnv*, int, const ERL_NIF_TERM[]);

// %ArgumentError{message: ...}, raised in the calling process.
ERL_NIF_TERM raise_argument_error(ErlNifEnv* env, const BadArg& bad);
// {:error, {:pool, :native_exception, message, %{}}}
ERL_NIF_TERM exception_error(ErlNifEnv* env, std::string_view what);

// The env of the NIF running on this thread, nullptr on threads ERTS did not
// create: enif_send's caller_env. Replies and events are sent from gRPC and
// event-loop threads (nullptr is required there) and sometimes from inside
// a NIF (a call finished while submit or cancel runs), where the calling
// env is required instead.
ErlNifEnv* calling_env() noexcept;

// Sets calling_env() for the NIF call it spans. A thread_local, the one
// piece of state outside NifState: it names the running call, not the NIF's.
class CallingEnvScope {
 public:
  explicit CallingEnvScope(ErlNifEnv* env) noexcept;
  ~CallingEnvScope();
  CallingEnvScope(const CallingEnvScope&) = delete;
  CallingEnvScope& operator=(const CallingEnvScope&) = delete;

 private:
  ErlNifEnv* previous_;
};

template <NifFn F>
ERL_NIF_TERM boundary(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]) noexcept {
  CallingEnvScope scope(env);
  try {
    return F(env, argc, argv);
  } catch (const BadArg& bad) {
    return raise_argument_error(env, bad);
  } catch (const std::bad_alloc&) {
    return exception_error(env, "out of memory");
  } catch (const std::exception& e) {
    return exception_error(env, e.what());
  } catch (...) {
    return exception_error(env, "unknown C++ exception");
  }
}

// Reads NIF arguments by position; each getter throws BadArg naming what it wanted.
class ArgReader {
 public:
  ArgReader(ErlNifEnv* env, const ERL_NIF_TERM argv[]) : env_(env), argv_(argv) {}
  PoolResource* pool(int index) const;           // a live pool resource
  PoolResource* pool_or_null(int index) const;   // a pool resource, nullptr once stopped
  std::uint64_t u64(int index, const char* what) const;
  std::int64_t i64(int index, const char* what) const;
  int integer(int index, const char* what) const;
  std::string string(int index, const char* what) const;
  std::string_view bytes(int index, const char* what) const;  // valid while the call runs
  ErlNifPid local_pid(int index, const char* what) const;
  bool boolean(int index) const;  // true only for `true`
  ERL_NIF_TERM term(int index) const { return argv_[index]; }

 private:
  ErlNifEnv* env_;
  const ERL_NIF_TERM* argv_;
};

// Hand decoding for nested terms (tuples in lists): false when `term` is
// not a binary / not a proper list of binaries.
bool get_string(ErlNifEnv* env, ERL_NIF_TERM term, std::string& out);
bool get_string_list(ErlNifEnv* env, ERL_NIF_TERM list, std::vector<std::string>& out);
// {:error, message}
ERL_NIF_TERM error_with(ErlNifEnv* env, std::string_view message);

}  // namespace snakepit::nif
