defmodule Snakepit.Bridge.SessionStore do
  @moduledoc """
  Sessions with a time-to-live.

      {:ok, session} = SessionStore.create_session("user-42", ttl: 600, metadata: %{user: 42})
      {:ok, _} = Snakepit.execute_in_session("user-42", "predict", %{x: 1})
      {:ok, %{last_worker_id: worker}} = SessionStore.get_session("user-42")

  Which worker runs a session's calls is decided by the native scheduler's
  session affinity, not here: this store keeps the session's lifetime and
  the application's data. `last_worker_id` is the worker that served the
  session's last call (a `:hint` call may fall back to another one) and,
  before any reply, the worker the native affinity bound the session to
  when its first call was dispatched, so it reports what the scheduler did
  rather than a second opinion. Deleting or expiring a session drops its
  native binding too. A call in a session
  that does not exist yet creates it, with the default TTL.

  A session expires `ttl` seconds (default 3600) after it was last used (a
  call, `get_session/1`, `update_session/2`); expired sessions are not
  returned and are removed every `cleanup_interval` ms (default 1000).

  Telemetry: `[:snakepit, :session_store, :session, :created | :deleted]`
  (`%{session_id}`) and `[:snakepit, :session_store, :session, :expired]`
  (`%{count}`).
  """
  use GenServer

  alias Snakepit.Bridge.Session
  alias Snakepit.Native
  alias Snakepit.Telemetry

  @table :snakepit_sessions
  @default_ttl_s 3_600
  @default_cleanup_ms 1_000
  @default_max_sessions 10_000

  # Row: {id, last_accessed_ms, ttl_ms, last_worker_id, created_at_ms, metadata, programs}
  @last_accessed 2
  @ttl 3
  @worker 4
  @metadata 6
  @programs 7

  @doc """
  Starts the store (the application does). Options: `:default_ttl` in
  seconds (3600, also `config :snakepit, :session_store, default_ttl: ...`),
  `:cleanup_interval` in ms (1000), `:max_sessions` (10 000 or `:infinity`).
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc """
  Creates session `session_id`, or returns it if it exists. Options: `:ttl`
  (seconds), `:metadata`, `:programs`. `{:error, :session_quota_exceeded}`
  when `max_sessions` are live.
  """
  @spec create_session(String.t(), keyword()) :: {:ok, Session.t()} | {:error, term()}
  def create_session(session_id, opts \\ []) when is_binary(session_id) and is_list(opts),
    do: GenServer.call(__MODULE__, {:create, session_id, opts})

  @doc "The session, marking it used; `{:error, :not_found}` if it does not exist or expired."
  @spec get_session(String.t()) :: {:ok, Session.t()} | {:error, :not_found}
  def get_session(session_id) when is_binary(session_id) do
    with {:ok, row} <- live_row(session_id) do
      now = now_ms()
      :ets.update_element(@table, session_id, {@last_accessed, now})
      {:ok, to_session(put_elem(row, @last_accessed - 1, now))}
    end
  end

  @doc """
  Replaces the session's `metadata`, `programs` and `ttl` with those of
  `fun.(session)`. Returns the updated session, `{:error, :not_found}`, or
  `{:error, {:update_failed, reason}}` when `fun` raises or does not return
  the same session.
  """
  @spec update_session(String.t(), (Session.t() -> Session.t())) ::
          {:ok, Session.t()} | {:error, term()}
  def update_session(session_id, fun) when is_binary(session_id) and is_function(fun, 1),
    do: GenServer.call(__MODULE__, {:update, session_id, fun})

  @doc "Deletes the session; `:ok` whether or not it existed."
  @spec delete_session(String.t()) :: :ok
  def delete_session(session_id) when is_binary(session_id),
    do: GenServer.call(__MODULE__, {:delete, session_id})

  @doc "The ids of the live sessions."
  @spec list_sessions() :: [String.t()]
  def list_sessions do
    now = now_ms()

    :ets.select(@table, [
      {{:"$1", :"$2", :"$3", :_, :_, :_, :_}, [{:>=, {:+, :"$2", :"$3"}, now}], [:"$1"]}
    ])
  end

  @doc "Whether the session exists and has not expired (does not mark it used)."
  @spec session_exists?(String.t()) :: boolean()
  def session_exists?(session_id) when is_binary(session_id),
    do: match?({:ok, _}, live_row(session_id))

  @doc """
  Records that `worker_id` served the session, creating the session if
  needed (`Snakepit.execute/3` does this for every call in a session).
  """
  @spec store_worker_session(String.t(), String.t()) :: :ok | {:error, term()}
  def store_worker_session(session_id, worker_id)
      when is_binary(session_id) and is_binary(worker_id) do
    if :ets.update_element(@table, session_id, [{@last_accessed, now_ms()}, {@worker, worker_id}]),
      do: :ok,
      else: GenServer.call(__MODULE__, {:served, session_id, worker_id})
  end

  @doc false
  # From Snakepit.execute/3 when a call in a session is submitted: the
  # session exists, and is used, from then on, before any reply.
  @spec opened(String.t() | nil) :: :ok
  def opened(nil), do: :ok

  def opened(session_id) do
    unless :ets.update_element(@table, session_id, {@last_accessed, now_ms()}),
      do: GenServer.call(__MODULE__, {:served, session_id, nil})

    :ok
  catch
    # The store is restarting: the reply records the session.
    :error, :badarg -> :ok
    :exit, _store_down -> :ok
  end

  @doc false
  # From Snakepit.execute/3 after each reply. A call outside a session, or
  # with the store down (restarting), records nothing and costs nothing.
  @spec served(term(), String.t()) :: :ok
  def served(nil, _worker_id), do: :ok
  def served("", _worker_id), do: :ok

  def served(session_id, worker_id) when worker_id != "" do
    store_worker_session(to_string(session_id), worker_id)
    :ok
  catch
    # The store is restarting: the next call records the worker again.
    :error, :badarg -> :ok
    :exit, _store_down -> :ok
  end

  def served(_session_id, _worker_id), do: :ok

  @doc "Removes the expired sessions now; returns how many."
  @spec cleanup_expired_sessions() :: non_neg_integer()
  def cleanup_expired_sessions, do: GenServer.call(__MODULE__, :cleanup)

  @doc "`%{current_sessions, sessions_created, sessions_deleted, sessions_expired, max_sessions, default_ttl}`."
  @spec get_stats() :: map()
  def get_stats, do: GenServer.call(__MODULE__, :stats)

  # ---------------------------------------------------------------- server

  @impl GenServer
  def init(opts) do
    config = Map.new(Application.get_env(:snakepit, :session_store, []))

    :ets.new(@table, [
      :named_table,
      :public,
      :set,
      read_concurrency: true,
      write_concurrency: true
    ])

    state = %{
      default_ttl: option(opts, config, :default_ttl, @default_ttl_s),
      cleanup_interval: option(opts, config, :cleanup_interval, @default_cleanup_ms),
      max_sessions: option(opts, config, :max_sessions, @default_max_sessions),
      created: 0,
      deleted: 0,
      expired: 0
    }

    validate!(state)
    schedule_cleanup(state)
    {:ok, state}
  end

  @impl GenServer
  def handle_call({:create, id, opts}, _from, state) do
    case live_row(id) do
      {:ok, row} ->
        {:reply, {:ok, to_session(row)}, state}

      {:error, :not_found} ->
        insert(id, opts, nil, state)
    end
  end

  def handle_call({:served, id, worker_id}, _from, state) do
    case :ets.update_element(@table, id, [{@last_accessed, now_ms()}, {@worker, worker_id}]) do
      true ->
        {:reply, :ok, state}

      false ->
        case insert(id, [], worker_id, state) do
          {:reply, {:ok, _}, state} -> {:reply, :ok, state}
          error_reply -> error_reply
        end
    end
  end

  def handle_call({:update, id, fun}, _from, state) do
    with {:ok, row} <- live_row(id),
         session = to_session(row),
         {:ok, %Session{id: ^id} = updated} <- apply_update(fun, session),
         :ok <- validate_session(updated) do
      now = now_ms()

      :ets.update_element(@table, id, [
        {@last_accessed, now},
        {@ttl, updated.ttl * 1000},
        {@metadata, updated.metadata},
        {@programs, updated.programs}
      ])

      [row] = :ets.lookup(@table, id)
      {:reply, {:ok, to_session(row)}, state}
    else
      {:ok, other} -> {:reply, {:error, {:update_failed, {:not_the_session, other}}}, state}
      {:error, _} = error -> {:reply, error, state}
    end
  end

  def handle_call({:delete, id}, _from, state) do
    drop_native_sessions([id])

    if :ets.take(@table, id) != [] do
      Telemetry.execute([:snakepit, :session_store, :session, :deleted], %{}, %{session_id: id})
      {:reply, :ok, %{state | deleted: state.deleted + 1}}
    else
      {:reply, :ok, state}
    end
  end

  def handle_call(:cleanup, _from, state) do
    {count, state} = expire(state)
    {:reply, count, state}
  end

  def handle_call(:stats, _from, state) do
    {:reply,
     %{
       current_sessions: length(list_sessions()),
       sessions_created: state.created,
       sessions_deleted: state.deleted,
       sessions_expired: state.expired,
       max_sessions: state.max_sessions,
       default_ttl: state.default_ttl
     }, state}
  end

  @impl GenServer
  def handle_info(:cleanup, state) do
    {_count, state} = expire(state)
    schedule_cleanup(state)
    {:noreply, state}
  end

  defp insert(id, opts, worker_id, state) do
    if state.max_sessions != :infinity and :ets.info(@table, :size) >= state.max_sessions do
      {:reply, {:error, :session_quota_exceeded}, state}
    else
      now = now_ms()

      row =
        {id, now, Keyword.get(opts, :ttl, state.default_ttl) * 1000, worker_id, now,
         Map.new(Keyword.get(opts, :metadata, %{})), Map.new(Keyword.get(opts, :programs, %{}))}

      with :ok <- validate_session(to_session(row)) do
        :ets.insert(@table, row)
        Telemetry.execute([:snakepit, :session_store, :session, :created], %{}, %{session_id: id})
        {:reply, {:ok, to_session(row)}, %{state | created: state.created + 1}}
      else
        error -> {:reply, error, state}
      end
    end
  end

  defp expire(state) do
    now = now_ms()

    expired =
      :ets.select(@table, [
        {{:"$3", :"$1", :"$2", :_, :_, :_, :_}, [{:<, {:+, :"$1", :"$2"}, now}], [:"$3"]}
      ])

    Enum.each(expired, &:ets.delete(@table, &1))
    drop_native_sessions(expired)
    count = length(expired)

    if count > 0 do
      Telemetry.execute([:snakepit, :session_store, :session, :expired], %{count: count}, %{})
    end

    {count, %{state | expired: state.expired + count}}
  end

  defp apply_update(fun, session) do
    {:ok, fun.(session)}
  rescue
    exception -> {:error, {:update_failed, exception}}
  catch
    kind, reason -> {:error, {:update_failed, {kind, reason}}}
  end

  defp live_row(id) do
    case :ets.lookup(@table, id) do
      [{^id, last, ttl, _, _, _, _} = row] ->
        if last + ttl >= now_ms(), do: {:ok, row}, else: {:error, :not_found}

      [] ->
        {:error, :not_found}
    end
  end

  # The worker that served the session's last reply; before any reply, the
  # one the native affinity bound it to when its first call was dispatched.
  defp native_worker(session_id) do
    Enum.find_value(Snakepit.Pool.names(), fn pool ->
      case Snakepit.Pool.lookup(pool) do
        {:ok, handle} -> Native.session_worker(handle, session_id)
        {:error, _} -> nil
      end
    end)
  end

  # A deleted or expired session is forgotten natively too, so its next call
  # is placed afresh rather than by a binding the store no longer has.
  defp drop_native_sessions([]), do: :ok

  defp drop_native_sessions(ids) do
    for pool <- Snakepit.Pool.names(),
        {:ok, handle} <- [Snakepit.Pool.lookup(pool)],
        id <- ids,
        do: Native.session_drop(handle, id)

    :ok
  end

  defp to_session({id, last, ttl, worker, created, metadata, programs}) do
    %Session{
      id: id,
      created_at: to_seconds(created),
      last_accessed: to_seconds(last),
      ttl: div(ttl, 1000),
      last_worker_id: worker || native_worker(id),
      metadata: metadata,
      programs: programs,
      stats: %{program_count: map_size(programs)}
    }
  end

  defp validate_session(%Session{id: id, ttl: ttl, metadata: metadata, programs: programs}) do
    cond do
      not (is_binary(id) and id != "") -> {:error, :invalid_id}
      not (is_integer(ttl) and ttl >= 0) -> {:error, :invalid_ttl}
      not is_map(metadata) -> {:error, :invalid_metadata}
      not is_map(programs) -> {:error, :invalid_programs}
      true -> :ok
    end
  end

  defp option(opts, config, key, default),
    do: Keyword.get(opts, key, Map.get(config, key, default))

  defp validate!(state) do
    checks = [
      default_ttl: is_integer(state.default_ttl) and state.default_ttl >= 0,
      cleanup_interval: is_integer(state.cleanup_interval) and state.cleanup_interval > 0,
      max_sessions:
        state.max_sessions == :infinity or
          (is_integer(state.max_sessions) and state.max_sessions > 0)
    ]

    for {key, false} <- checks do
      raise ArgumentError,
            "invalid #{inspect(key)} for Snakepit.Bridge.SessionStore: #{inspect(Map.fetch!(state, key))}"
    end

    :ok
  end

  defp schedule_cleanup(state), do: Process.send_after(self(), :cleanup, state.cleanup_interval)

  # Monotonic ms, so a clock change never expires or revives sessions.
  defp now_ms, do: System.monotonic_time(:millisecond)
  defp to_seconds(ms), do: System.convert_time_unit(ms, :millisecond, :second)
end
