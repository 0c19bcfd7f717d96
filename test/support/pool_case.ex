defmodule Snakepit.PoolCase do
  @moduledoc "Starts real pools of Python workers for a test."
  use ExUnit.CaseTemplate

  using do
    quote do
      import Snakepit.PoolCase
    end
  end

  @fixtures Path.expand("../fixtures/python", __DIR__)

  @doc """
  Starts a supervised pool from `opts` (pool config keys) and waits until
  every worker is ready. `fixture_adapter: "Class"` runs that class of
  test/fixtures/python/snakepit_exunit_adapters.py.
  """
  @spec start_pool!(map() | keyword()) :: atom()
  def start_pool!(opts) do
    config =
      opts
      |> Map.new()
      |> with_fixture_adapter()
      |> Map.put_new(:startup_batch_delay_ms, 0)
      |> Snakepit.Config.normalize_pool()

    ExUnit.Callbacks.start_supervised!({Snakepit.Pool, config})
    :ok = Snakepit.Pool.await_ready(config.name, 30_000)
    true = eventually(fn -> Snakepit.get_stats(config.name).ready == config.pool_size end, 30_000)
    config.name
  end

  defp with_fixture_adapter(%{fixture_adapter: class} = opts) do
    opts
    |> Map.delete(:fixture_adapter)
    |> Map.merge(%{
      adapter_args: ["--adapter", "snakepit_exunit_adapters." <> class],
      adapter_env: [{"PYTHONPATH", @fixtures}]
    })
  end

  defp with_fixture_adapter(opts), do: opts

  @doc "Polls `fun` until it returns true or `timeout_ms` passes; returns the last result."
  @spec eventually((() -> boolean()), non_neg_integer()) :: boolean()
  def eventually(fun, timeout_ms \\ 10_000) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    poll(fun, deadline)
  end

  defp poll(fun, deadline) do
    cond do
      fun.() -> true
      System.monotonic_time(:millisecond) > deadline -> false
      true -> Process.sleep(50) && poll(fun, deadline)
    end
  end

  @doc """
  Reports every time a process holds a normal scheduler longer than
  `threshold_ms` to the caller until the test ends; returns `:ok`. The
  monitoring process itself is never reported, so calls under watch run in
  a task.
  """
  @spec watch_long_schedules(pos_integer()) :: :ok
  def watch_long_schedules(threshold_ms) do
    previous = :erlang.system_monitor(self(), [{:long_schedule, threshold_ms}])
    ExUnit.Callbacks.on_exit(fn -> restore_system_monitor(previous) end)
    :ok
  end

  @doc "Stops watching and returns the long schedules reported for `pid`."
  @spec long_schedules_of(pid()) :: [term()]
  def long_schedules_of(pid) do
    :erlang.system_monitor(self(), [])
    collect_long_schedules(pid, [])
  end

  defp collect_long_schedules(pid, acc) do
    receive do
      {:monitor, ^pid, :long_schedule, info} -> collect_long_schedules(pid, [info | acc])
      {:monitor, _other, :long_schedule, _info} -> collect_long_schedules(pid, acc)
    after
      0 -> acc
    end
  end

  defp restore_system_monitor({pid, options}), do: :erlang.system_monitor(pid, options)
  defp restore_system_monitor(:undefined), do: :erlang.system_monitor(:undefined)

  @doc "Whether an OS process is alive."
  @spec os_alive?(integer()) :: boolean()
  def os_alive?(os_pid), do: File.exists?("/proc/#{os_pid}") and not zombie?(os_pid)

  defp zombie?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> stat |> String.split(") ") |> Enum.at(1, "") |> String.starts_with?("Z")
      _ -> true
    end
  end
end
