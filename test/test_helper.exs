ExUnit.start(capture_log: true)
# Pools boot asynchronously; the suite starts once the configured one serves.
:ok = Snakepit.Pool.await_ready(Snakepit.Pool, 60_000)
