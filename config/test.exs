import Config

# The suite starts the pools it needs itself; this one serves the plain
# `Snakepit.execute/3` calls.
config :snakepit, pools: [%{name: :default, pool_size: 2, startup_batch_delay_ms: 0}]

config :logger, level: :warning
