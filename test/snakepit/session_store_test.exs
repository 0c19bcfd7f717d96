defmodule Snakepit.SessionStoreTest do
  use Snakepit.PoolCase, async: false

  alias Snakepit.Bridge.{Session, SessionStore}

  defp new_id, do: "session-#{System.unique_integer([:positive])}"

  test "create, get, update, list, exists, delete" do
    id = new_id()

    assert {:ok, %Session{id: ^id, ttl: 600, metadata: %{user: 1}} = s} =
             SessionStore.create_session(id, ttl: 600, metadata: %{user: 1})

    assert is_integer(s.created_at) and s.last_worker_id == nil
    # Creating it again returns the existing session.
    assert {:ok, %Session{metadata: %{user: 1}}} = SessionStore.create_session(id, ttl: 5)
    assert SessionStore.session_exists?(id)
    assert id in SessionStore.list_sessions()

    assert {:ok,
            %Session{metadata: %{user: 2}, programs: %{"p" => 1}, stats: %{program_count: 1}}} =
             SessionStore.update_session(id, fn s ->
               %{s | metadata: %{user: 2}, programs: %{"p" => 1}}
             end)

    assert {:ok, %Session{metadata: %{user: 2}}} = SessionStore.get_session(id)

    assert {:error, {:update_failed, %RuntimeError{}}} =
             SessionStore.update_session(id, fn _ -> raise "no" end)

    assert {:error, {:update_failed, {:not_the_session, :oops}}} =
             SessionStore.update_session(id, fn _ -> :oops end)

    assert {:error, :invalid_ttl} = SessionStore.update_session(id, &%{&1 | ttl: -1})

    assert :ok = SessionStore.delete_session(id)
    assert :ok = SessionStore.delete_session(id)
    refute SessionStore.session_exists?(id)
    assert {:error, :not_found} = SessionStore.get_session(id)
    assert {:error, :not_found} = SessionStore.update_session(id, & &1)
    assert {:error, :invalid_id} = SessionStore.create_session("")
  end

  test "a session expires ttl seconds after its last use" do
    id = new_id()
    kept = new_id()
    {:ok, _} = SessionStore.create_session(id, ttl: 1)
    {:ok, _} = SessionStore.create_session(kept, ttl: 60)
    before = SessionStore.get_stats().sessions_expired

    # Using it keeps it alive past its first second.
    Process.sleep(700)
    assert {:ok, _} = SessionStore.get_session(id)
    Process.sleep(700)
    assert SessionStore.session_exists?(id)

    assert eventually(fn -> not SessionStore.session_exists?(id) end, 3_000)
    assert {:error, :not_found} = SessionStore.get_session(id)
    refute id in SessionStore.list_sessions()
    assert SessionStore.session_exists?(kept)
    # The periodic sweep removed it, not only hid it.
    assert eventually(fn -> SessionStore.get_stats().sessions_expired > before end, 3_000)
  end

  test "calls in a session record the worker that served them" do
    pool = start_pool!(name: :session_store_pool, pool_size: 2)
    id = new_id()

    {:ok, pid} = Snakepit.execute_in_session(id, "get_pid", %{}, pool_name: pool)
    assert {:ok, %Session{last_worker_id: worker_id}} = SessionStore.get_session(id)
    {:ok, workers} = Snakepit.Pool.workers(pool)
    assert %{os_pid: ^pid} = Enum.find(workers, &(&1.id == worker_id))

    # The native affinity keeps the session there; the store agrees.
    for _ <- 1..5 do
      {:ok, ^pid} = Snakepit.execute_in_session(id, "get_pid", %{}, pool_name: pool)
      assert {:ok, %Session{last_worker_id: ^worker_id}} = SessionStore.get_session(id)
    end

    # A session no pool has bound reports what was recorded.
    other = new_id()
    :ok = SessionStore.store_worker_session(other, "elsewhere")
    assert {:ok, %Session{last_worker_id: "elsewhere"}} = SessionStore.get_session(other)
    refute SessionStore.session_exists?(new_id())
  end

  test "the worker is known while the session's first call still runs; delete drops the binding" do
    pool = start_pool!(name: :session_store_live, pool_size: 2)
    id = new_id()
    {:ok, _} = SessionStore.create_session(id)

    task =
      Task.async(fn ->
        Snakepit.execute_in_session(id, "sleep_task", %{duration_ms: 400}, pool_name: pool)
      end)

    assert eventually(
             fn ->
               match?(
                 {:ok, %Session{last_worker_id: w}} when is_binary(w),
                 SessionStore.get_session(id)
               )
             end,
             2_000
           )

    refute Task.yield(task, 0), "the call finished before the binding was seen"
    {:ok, %Session{last_worker_id: worker_id}} = SessionStore.get_session(id)
    {:ok, handle} = Snakepit.Pool.lookup(pool)
    assert Snakepit.Native.session_worker(handle, id) == worker_id
    assert {:ok, _} = Task.await(task, 5_000)

    :ok = SessionStore.delete_session(id)
    assert Snakepit.Native.session_worker(handle, id) == nil
  end
end
