defmodule Snakepit.OverrunTest do
  # A tool that outlives its caller's timeout keeps its worker's slot until
  # it really ends; one that runs past its deadline by more than
  # tool_overrun_grace_ms gets its worker killed and replaced.
  use Snakepit.PoolCase, async: false
  # `make test` runs these again on the worker's grpc.server fallback.
  @moduletag :worker_path

  setup do
    :telemetry.attach_recorder()
    on_exit(&:telemetry.detach_recorder/0)
  end

  defp worker!(pool) do
    {:ok, [worker]} = Snakepit.Pool.workers(pool)
    worker
  end

  test "a tool that outlives its caller keeps the slot, then the next call runs on the same worker" do
    pool = start_pool!(name: :overrun_keep, pool_size: 1, tool_overrun_grace_ms: 10_000)
    %{os_pid: os_pid} = worker!(pool)

    assert {:error, %Snakepit.Error{category: :timeout}} =
             Snakepit.execute("sleep", %{ms: 1_500}, pool_name: pool, timeout: 200)

    # Still running in Python: the slot is not handed to another call.
    assert %{inflight: 1, capacity: 1} = worker!(pool)
    assert %{available: 0, busy: 1} = Snakepit.get_stats(pool)

    assert {:ok, _} = Snakepit.execute("ping", %{}, pool_name: pool, timeout: 10_000)
    assert %{os_pid: ^os_pid, inflight: 0} = worker!(pool)
    refute_received {:telemetry_event, [:snakepit, :worker, :hung], _, _}
  end

  test "a tool running past its deadline by the grace: worker killed, replaced, telemetry" do
    pool = start_pool!(name: :overrun_kill, pool_size: 1, tool_overrun_grace_ms: 500)
    %{os_pid: stuck_pid, id: stuck_id} = worker!(pool)

    assert {:error, %Snakepit.Error{category: :timeout}} =
             Snakepit.execute("sleep", %{ms: 600_000}, pool_name: pool, timeout: 200)

    assert_receive {:telemetry_event, [:snakepit, :worker, :hung], %{overrun_ms: overrun},
                    %{pool: ^pool, worker_id: ^stuck_id, command: "sleep"}},
                   10_000

    assert overrun >= 500
    assert eventually(fn -> not os_alive?(stuck_pid) end)

    # The pool serves again, on a new process.
    assert {:ok, _} = Snakepit.execute("ping", %{}, pool_name: pool, timeout: 30_000)
    assert %{os_pid: new_pid} = worker!(pool)
    assert new_pid != stuck_pid
  end
end
