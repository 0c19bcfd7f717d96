defmodule Snakepit.PathDependencyTest do
  use ExUnit.Case, async: false

  alias Snakepit.TempApp

  # An application that depends on this project by path, configured the way
  # Snakepit users configure it, run as its own `mix run` OS process.
  @moduletag timeout: 300_000

  @app_config """
  import Config

  config :snakepit,
    pooling_enabled: true,
    pools: [
      %{
        name: :default,
        worker_profile: :process,
        pool_size: 4,
        adapter_env: [{"OPENBLAS_NUM_THREADS", "1"}]
      }
    ]

  config :logger, level: :warning
  """

  @app_script """
  {:ok, _} = Snakepit.execute("ping", %{})

  results =
    1..1000
    |> Enum.map(fn i -> Task.async(fn -> {i, Snakepit.execute("add", %{a: i, b: 1})} end) end)
    |> Task.await_many(120_000)

  wrong = for {i, result} <- results, result != {:ok, i + 1}, do: {i, result}
  IO.puts("ping ok; adds=\#{length(results)} wrong=\#{length(wrong)} workers=\#{Snakepit.get_stats().workers}")
  """

  test "a host app gets {:ok, _} from ping and 1,000 right integers from add" do
    dir = TempApp.create!(@app_config)
    on_exit(fn -> File.rm_rf!(dir) end)
    File.write!(Path.join(dir, "script.exs"), @app_script)

    {output, status} = TempApp.mix(dir, ["run", "script.exs"])

    assert status == 0, output
    assert output =~ "ping ok; adds=1000 wrong=0 workers=4"
  end
end
