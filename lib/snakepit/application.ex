defmodule Snakepit.Application do
  @moduledoc false
  use Application

  @impl Application
  def start(_type, _args) do
    env = Application.get_all_env(:snakepit)
    pools = if Keyword.get(env, :pooling_enabled, true), do: Snakepit.Config.pools(env), else: []

    children =
      [
        {Task.Supervisor, name: Snakepit.Bridge.TaskSupervisor},
        Snakepit.Bridge.PythonTelemetry,
        Snakepit.Bridge.ToolRegistry
      ] ++ Enum.map(pools, &{Snakepit.Pool, &1})

    {run_id, _runtime_dir} = Snakepit.Native.runtime_info()
    Snakepit.Orphans.sweep(run_id)

    with {:ok, sup} <-
           Supervisor.start_link(children, strategy: :one_for_one, name: Snakepit.Supervisor),
         :ok <- await_pools(pools) do
      {:ok, sup}
    end
  end

  # An adapter that cannot even be imported fails the application start with
  # its traceback, instead of leaving callers to time out. The pools start
  # together, so they share one deadline.
  @boot_timeout_ms 60_000
  defp await_pools(pools) do
    deadline = System.monotonic_time(:millisecond) + @boot_timeout_ms

    Enum.reduce_while(pools, :ok, fn pool, :ok ->
      remaining = max(deadline - System.monotonic_time(:millisecond), 0)

      case Snakepit.Pool.await_ready(pool.name, remaining) do
        :ok ->
          {:cont, :ok}

        {:error, %Snakepit.Error{} = error} ->
          {:halt,
           {:error,
            {:pool_start_failed, pool.name,
             Exception.message(error) <> "\n" <> (error.python_traceback || "")}}}
      end
    end)
  end
end
