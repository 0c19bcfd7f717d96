defmodule Snakepit.Application do
  @moduledoc false
  use Application
  require Logger

  @impl Application
  def start(_type, _args) do
    env = Application.get_all_env(:snakepit)

    # Keys Snakepit does not use never stop the boot: they are named once,
    # whatever the log_level floor says. Invalid values of known keys raise.
    if ignored = Snakepit.Config.ignored_keys(env), do: Logger.warning(ignored)

    pools =
      if Snakepit.Config.globals(env).pooling_enabled, do: Snakepit.Config.pools(env), else: []

    {run_id, _runtime_dir} = Snakepit.Native.runtime_info()
    Snakepit.Orphans.sweep(run_id)

    # Pools start asynchronously: their workers boot after this returns; a
    # pool that cannot start is marked failed (Snakepit.Pool) and the
    # application and its other pools run on.
    children = [
      {Task.Supervisor, name: Snakepit.Bridge.TaskSupervisor},
      Snakepit.Bridge.PythonTelemetry,
      Snakepit.Bridge.ToolRegistry,
      Snakepit.Bridge.SessionStore,
      # Before the pools: a clustered pool links its agent into it.
      Snakepit.Cluster.Supervisor,
      {Snakepit.Pool.Supervisor, pools}
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: Snakepit.Supervisor)
  end
end
