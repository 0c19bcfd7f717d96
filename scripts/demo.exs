# `make demo`: a process pool with the built-in showcase adapter.
Application.put_env(:snakepit, :pooling_enabled, true)

Application.put_env(:snakepit, :pools, [%{name: :default, worker_profile: :process, pool_size: 2}])

Logger.configure(level: :warning)
{:ok, _} = Application.ensure_all_started(:snakepit)
:ok = Snakepit.Pool.await_ready()

show = fn label, result -> IO.puts(String.pad_trailing(label, 28) <> inspect(result)) end

IO.puts("Snakepit native demo: pool :default, 2 Python workers\n")
show.("ping", Snakepit.execute("ping", %{}))
show.("echo", Snakepit.execute("echo", %{message: "hello", numbers: [1, 2, 3]}))
show.("add 40 + 2", Snakepit.execute("add", %{a: 40, b: 2}))

show.(
  "process_text upper",
  Snakepit.execute("process_text", %{text: "snakepit", operation: "upper"})
)

{:error, error} = Snakepit.execute("raise_error", %{message: "demo failure"})
show.("raise_error (category)", error.category)
show.("raise_error (message)", Exception.message(error))
{:error, error} = Snakepit.execute("echo", %{owner: self()})
show.("pid in args (validation)", Exception.message(error))

IO.puts("\nSnakepit.get_stats():")
IO.inspect(Snakepit.get_stats())
IO.puts("\nworkers: #{inspect(Snakepit.list_workers())}")
Application.stop(:snakepit)
