defmodule Snakepit.Telemetry.PoolEvents do
  @moduledoc false
  # The pool lifecycle events with upstream Snakepit's shapes, kept by the
  # pool process (Snakepit.Pool), which passes this state along:
  #
  #   [:snakepit, :pool, :init_started]   %{total_workers, count} / %{pool_name}
  #   [:snakepit, :pool, :worker, :spawned] %{duration, system_time} /
  #       %{node, pool_name, worker_id, worker_pid, python_pid, mode}
  #       (when the worker is ready to serve; duration from its spawn, native units)
  #   [:snakepit, :pool, :worker_ready]   %{worker_count, count} / %{pool_name, worker_id}
  #   [:snakepit, :pool, :init_complete]  %{duration_ms, total_workers, count} /
  #       %{pool_name, pool_workers: %{pool_name => ready workers}}
  #   [:snakepit, :pool, :worker, :terminated] %{lifetime} /
  #       %{node, pool_name, worker_id, worker_pid, python_pid, reason, planned}

  alias Snakepit.Telemetry

  defstruct [:pool_name, :mode, :pool_size, :started, spawned: %{}, init_complete: false]

  @type t :: %__MODULE__{}

  @spec init(map()) :: t()
  def init(config) do
    Telemetry.execute(
      [:snakepit, :pool, :init_started],
      %{total_workers: config.pool_size, count: 1},
      %{pool_name: config.name}
    )

    %__MODULE__{
      pool_name: config.name,
      mode: config.worker_profile,
      pool_size: config.pool_size,
      started: System.monotonic_time()
    }
  end

  @spec spawned(t(), String.t()) :: t()
  def spawned(t, worker_id),
    do: %{t | spawned: Map.put(t.spawned, worker_id, System.monotonic_time())}

  @spec ready(t(), String.t(), integer(), non_neg_integer()) :: t()
  def ready(t, worker_id, os_pid, ready_count) do
    now = System.monotonic_time()

    Telemetry.execute(
      [:snakepit, :pool, :worker, :spawned],
      %{duration: now - Map.get(t.spawned, worker_id, now), system_time: System.system_time()},
      %{
        node: node(),
        pool_name: t.pool_name,
        worker_id: worker_id,
        worker_pid: self(),
        python_pid: os_pid,
        mode: t.mode
      }
    )

    Telemetry.execute(
      [:snakepit, :pool, :worker_ready],
      %{worker_count: ready_count, count: 1},
      %{pool_name: t.pool_name, worker_id: worker_id}
    )

    if not t.init_complete and ready_count >= t.pool_size do
      Telemetry.execute(
        [:snakepit, :pool, :init_complete],
        %{
          duration_ms: System.convert_time_unit(now - t.started, :native, :millisecond),
          total_workers: ready_count,
          count: 1
        },
        %{pool_name: t.pool_name, pool_workers: %{t.pool_name => ready_count}}
      )

      %{t | init_complete: true}
    else
      t
    end
  end

  @spec exited(t(), String.t(), integer(), String.t()) :: t()
  def exited(t, worker_id, os_pid, how) do
    {spawned_at, spawned} = Map.pop(t.spawned, worker_id)
    now = System.monotonic_time()

    Telemetry.execute(
      [:snakepit, :pool, :worker, :terminated],
      %{lifetime: now - (spawned_at || now)},
      %{
        node: node(),
        pool_name: t.pool_name,
        worker_id: worker_id,
        worker_pid: self(),
        python_pid: os_pid,
        reason: how,
        # SIGTERM is how the pool stops and recycles workers.
        planned: how =~ ~r/Terminated|status 0$/
      }
    )

    %{t | spawned: spawned}
  end
end
