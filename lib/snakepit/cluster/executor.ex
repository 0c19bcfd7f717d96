defmodule Snakepit.Cluster.Executor do
  @moduledoc false
  # The serving side of a remote call: a fresh process per call, spawned by
  # the caller's node with spawn_request + monitor. It is the NIF's caller
  # here (the NIF answers local pids only), watches the remote caller (a
  # dead caller or a lost caller node cancels the call, which frees the
  # slot), and always ends by exiting with {:snakepit_result, result}: the
  # result rides on the caller's DOWN, so exactly one signal ends the call.
  #
  # Messages to the caller go to its alias (dropped by the runtime once the
  # caller is done with the call): {:snakepit_started, alias} when a worker
  # takes the call (the NIF's {ref, :started}), so that a caller whose node
  # link drops knows whether the call could have run here; a stream's
  # chunks as {:snakepit_chunk, alias, self(), chunk}. The caller's
  # {:snakepit_grant, n} become Native.grant, so the NIF's window bounds
  # what is in flight end to end.

  alias Snakepit.{Native, Pool}
  alias Snakepit.Bridge.ToolRegistry
  alias Snakepit.Cluster.Agent

  # The caller waits this much longer than the call's own deadline.
  @reply_margin_ms 2_000

  @doc false
  def run(caller, reply_alias, stream?, pool, command, args, opts) do
    caller_monitor = Process.monitor(caller)

    # The session's Elixir tools live on the caller's node.
    ToolRegistry.with_origin(Keyword.get(opts, :session_id), node(caller), fn ->
      serve(caller_monitor, reply_alias, stream?, pool, command, args, opts)
    end)
  end

  defp serve(caller_monitor, reply_alias, stream?, pool, command, args, opts) do
    # A :hint call sent here because its home was full: not a new home.
    {spill?, opts} = Keyword.pop(opts, :session_spill, false)

    case Pool.route(pool) do
      {:cluster, {:cluster, ^pool, local, _defaults}} when local != nil ->
        case Snakepit.submit_local(pool, local, command, args, opts, stream?) do
          {:ok, call} ->
            unless spill?, do: Agent.served_session(pool, call.session_id)
            reply = await(call, caller_monitor, reply_alias)
            exit({:snakepit_result, Snakepit.finish_local(reply, call)})

          {:error, _} = error ->
            exit({:snakepit_result, error})
        end

      # Drained, stopped or not ready here: the call never started.
      _ ->
        exit(:snakepit_unavailable)
    end
  end

  defp await(%{ref: ref} = call, caller_monitor, reply_alias) do
    receive do
      {^ref, :started} ->
        send(reply_alias, {:snakepit_started, reply_alias})
        await(call, caller_monitor, reply_alias)

      {^ref, :chunk, chunk} ->
        send(reply_alias, {:snakepit_chunk, reply_alias, self(), Snakepit.build_chunk(chunk)})
        await(call, caller_monitor, reply_alias)

      {^ref, result, worker_id} ->
        {Snakepit.build_reply(result), worker_id}

      {:snakepit_grant, credits} ->
        Native.grant(call.handle, call.request_id, credits)
        await(call, caller_monitor, reply_alias)

      {:snakepit_cancel, _} ->
        Snakepit.give_up_local(call)

      # Nobody waits any more: cancel (the slot frees when the worker is done).
      {:DOWN, ^caller_monitor, :process, _, _} ->
        Snakepit.give_up_local(call)
        exit(:caller_down)
    after
      wait(call.timeout) -> Snakepit.give_up_local(call)
    end
  end

  defp wait(timeout) when timeout > 4_294_967_295 - @reply_margin_ms, do: :infinity
  defp wait(timeout), do: timeout + @reply_margin_ms
end
