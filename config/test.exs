import Config

# The suite starts the pools it needs itself; this one serves the plain
# `Snakepit.execute/3` calls.
config :snakepit,
  pooling_enabled: true,
  pools: [%{name: :default, pool_size: 2, startup_batch_delay_ms: 0}]

# Worker log lines carry the worker id as metadata.
config :logger, :console, metadata: [:worker_id]

config :logger, level: :warning
