// The NIF library: its function table (every NIF inside boundary<F>), the
// pool resource's callbacks, and load (state, resource types, lifeline,
// runtime directory, gRPC transport). The NIFs themselves live in
// pool_nifs.cpp, elixir_tools.cpp and decode_nifs.cpp.
#include <erl_nif.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <fstream>
#include <memory>
#include <new>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "boundary.hpp"
#include "nifs.hpp"
#include "reply_terms.hpp"

namespace snakepit::nif {

void pool_destructor(ErlNifEnv*, void* object) {
  auto* resource = static_cast<PoolResource*>(object);
  // Stopping waits for processes to exit: never on a scheduler thread.
  if (auto pool = std::move(resource->pool)) std::thread([pool] { pool->stop(); }).detach();
  resource->~PoolResource();
}

void pool_down(ErlNifEnv*, void* object, ErlNifPid* caller, ErlNifMonitor*) {
  auto* resource = static_cast<PoolResource*>(object);
  for (auto id : resource->callers.down(*caller))
    if (resource->pool) resource->pool->cancel(id);
}

namespace {

// boundary_check(kind): a NIF that throws, for the test proving the
// boundary turns exceptions into values (test/snakepit/native_boundary_test.exs).
ERL_NIF_TERM boundary_check(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  const auto& atoms = state(env).atoms;
  if (enif_is_identical(argv[0], atoms.bad_alloc)) throw std::bad_alloc();
  if (enif_is_identical(argv[0], atoms.runtime_error)) throw std::runtime_error("thrown on purpose");
  if (enif_is_identical(argv[0], atoms.bad_arg)) throw BadArg{0, ":bad_alloc, :runtime_error or :bad_arg"};
  return atoms.ok;
}


std::string random_hex(std::size_t bytes) {
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  std::string raw(bytes, '\0');
  urandom.read(raw.data(), static_cast<std::streamsize>(bytes));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : raw) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 0xF]);
  }
  return hex;
}

// The worker guard sits next to this library (both built into priv/);
// empty when it is missing.
std::string guard_path() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&guard_path), &info) == 0 || info.dli_fname == nullptr) return {};
  std::string path = info.dli_fname;
  path = fmt::format("{}snakepit_worker_guard", path.substr(0, path.rfind('/') + 1));
  return ::access(path.c_str(), X_OK) == 0 ? path : std::string();
}

// Each failing step says which it was: a bare load code tells nobody anything.
int load_failed(int code, const char* step, const std::string& detail = {}) {
  fmt::print(stderr, "snakepit_nif: load failed at {}{}{}\n", step, detail.empty() ? "" : ": ", detail);
  return code;
}

int open_resource_types(ErlNifEnv* env, NifState& nif) {
  ErlNifResourceTypeInit init{};
  init.dtor = pool_destructor;
  init.down = pool_down;
  init.members = 3;
  nif.pool_type = enif_open_resource_type_x(env, "snakepit_pool", &init, ERL_NIF_RT_CREATE, nullptr);
  if (nif.pool_type == nullptr) return load_failed(1, "opening the resource type snakepit_pool");
  nif.payload_type = open_payload_type(env);
  if (nif.payload_type == nullptr) return load_failed(1, "opening the resource type snakepit_payload");
  ErlNifResourceTypeInit watch_init{};
  watch_init.down = handler_down;
  watch_init.members = 3;
  nif.handler_watch_type =
      enif_open_resource_type_x(env, "snakepit_handler_watch", &watch_init, ERL_NIF_RT_CREATE, nullptr);
  if (nif.handler_watch_type == nullptr) return load_failed(1, "opening the resource type snakepit_handler_watch");
  return 0;
}

int load(ErlNifEnv* env, void** priv_data, ERL_NIF_TERM) {
  auto nif = std::make_unique<NifState>();
  nif->atoms.init(env);
  if (int rc = open_resource_types(env, *nif)) return rc;
  nif->guard_path = guard_path();
  if (nif->guard_path.empty()) return load_failed(5, "finding snakepit_worker_guard next to the library");

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return load_failed(2, "creating the lifeline pipe", std::strerror(errno));
  nif->lifeline_read.reset(fds[0]);
  nif->lifeline_write.reset(fds[1]);

  nif->run_id = random_hex(8);
  const char* base = std::getenv("SNAKEPIT_RUNTIME_DIR");
  std::string pattern = fmt::format("{}/snakepit-{}-XXXXXX", base != nullptr && *base != '\0' ? base : "/tmp", nif->run_id);
  if (::mkdtemp(pattern.data()) == nullptr)  // mkdtemp makes it 0700
    return load_failed(3, "creating the runtime directory", fmt::format("{}: {}", pattern, std::strerror(errno)));
  nif->runtime_dir = pattern;

  try {
    start_grpc(*nif);
  } catch (const std::exception& e) {
    return load_failed(4, "starting the gRPC transport and the Elixir-tool server", e.what());
  }
  *priv_data = nif.release();
  return 0;
}

ErlNifFunc nif_functions[] = {
    {"runtime_info", 0, boundary<runtime_info>, 0},
    {"pool_start", 2, boundary<pool_start>, 0},
    {"submit", 5, boundary<submit>, 0},
    {"grant", 3, boundary<grant>, 0},
    {"cancel", 2, boundary<cancel>, 0},
    {"count_rejected", 1, boundary<count_rejected>, 0},
    {"stats", 1, boundary<stats>, 0},
    {"load", 1, boundary<pool_load>, 0},
    {"session_worker", 2, boundary<session_worker>, 0},
    {"session_drop", 2, boundary<session_drop>, 0},
    {"workers", 1, boundary<workers>, 0},
    {"pool_stop", 1, boundary<pool_stop>, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"reports", 2, boundary<reports>, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"elixir_tools_socket", 0, boundary<elixir_tools_socket>, 0},
    {"elixir_tools_start", 1, boundary<elixir_tools_start>, 0},
    {"elixir_tool_reply", 2, boundary<elixir_tool_reply>, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"elixir_tools_list_reply", 2, boundary<elixir_tools_list_reply>, 0},
    {"decode_result", 1, boundary<decode_result>, 0},
    {"decode_chunk", 2, boundary<decode_chunk>, 0},
    {"decode_params", 1, boundary<decode_params>, 0},
    {"boundary_check", 1, boundary<boundary_check>, 0},
};

}  // namespace
}  // namespace snakepit::nif

ERL_NIF_INIT(Elixir.Snakepit.Native, snakepit::nif::nif_functions, snakepit::nif::load, nullptr, nullptr, nullptr)
