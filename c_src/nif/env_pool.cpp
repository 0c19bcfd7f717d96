// EnvPool (env_pool.hpp): the idle reply envs.
#include "env_pool.hpp"

namespace snakepit::nif {

EnvPool::EnvPool() { idle_.reserve(max_idle); }

EnvPool::~EnvPool() {
  for (ErlNifEnv* env : idle_) enif_free_env(env);
}

ErlNifEnv* EnvPool::take() {
  {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      ErlNifEnv* env = idle_.back();
      idle_.pop_back();
      return env;
    }
  }
  return enif_alloc_env();
}

void EnvPool::give(ErlNifEnv* env) noexcept {
  enif_clear_env(env);
  {
    std::lock_guard lock(mutex_);
    if (idle_.size() < max_idle) {
      idle_.push_back(env);
      return;
    }
  }
  enif_free_env(env);
}

}  // namespace snakepit::nif
