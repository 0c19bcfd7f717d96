// Reading a pool's native config map (Snakepit.Config.native_config/3) into
// a core::PoolConfig.
#pragma once

#include <erl_nif.h>
#include <fmt/format.h>

#include <stdexcept>
#include <string>

#include "../core/pool.hpp"
#include "nif_state.hpp"

namespace snakepit::nif {

// A key missing from the map or of the wrong type.
struct BadConfig : std::runtime_error {
  explicit BadConfig(const std::string& key)
      : std::runtime_error(fmt::format("native pool config: missing or invalid {}", key)) {}
};

// Throws BadConfig.
core::PoolConfig read_pool_config(ErlNifEnv* env, ERL_NIF_TERM map, const NifState& nif);

}  // namespace snakepit::nif
