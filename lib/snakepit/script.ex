defmodule Snakepit.Script do
  @moduledoc false
  # Snakepit.run_as_script/2: start (or restart), wait for the pools, run,
  # shut down, then exit as asked. Option names and defaults are upstream's.

  require Logger

  @exit_modes [:none, :halt, :stop, :auto]
  @stop_modes [:if_started, :always, :never]
  @truthy ["1", "true", "yes", "y", "on"]

  @spec run((() -> result), keyword()) :: result | {:error, term()} when result: term()
  def run(fun, opts) do
    startup_timeout = Keyword.get(opts, :timeout, 15_000)
    shutdown_timeout = Keyword.get(opts, :shutdown_timeout, 15_000)
    cleanup_timeout = Keyword.get(opts, :cleanup_timeout, 5_000)
    stop_mode = one_of!(:stop_mode, Keyword.get(opts, :stop_mode, :if_started), @stop_modes)
    exit_mode = exit_mode(opts, System.get_env())

    if restart?(Keyword.get(opts, :restart, :auto), stop_mode) and started?() do
      stop(shutdown_timeout, cleanup_timeout)
    end

    case Application.ensure_all_started(:snakepit) do
      {:ok, started} ->
        owned? = :snakepit in started
        exit_mode = resolve_auto(exit_mode, owned?)
        shutdown = fn status -> shutdown(stop_mode, owned?, exit_mode, status, opts) end

        case await(opts, startup_timeout) do
          :ok ->
            result = execute(fun)
            shutdown.(if match?({:ok, _}, result), do: 0, else: 1)
            unwrap(result)

          {:error, %Snakepit.Error{category: :timeout}} ->
            shutdown.(1)
            {:error, :pool_initialization_timeout}

          {:error, error} ->
            shutdown.(1)
            {:error, error}
        end

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp await(opts, timeout) do
    pooling? = Application.get_env(:snakepit, :pooling_enabled, false)

    if Keyword.get(opts, :await_pool, pooling?),
      do: Snakepit.Pool.await_ready(Snakepit.Pool, timeout),
      else: :ok
  end

  defp execute(fun) do
    {:ok, fun.()}
  catch
    kind, reason -> {:error, {kind, reason, __STACKTRACE__}}
  end

  defp unwrap({:ok, value}), do: value
  defp unwrap({:error, {kind, reason, stacktrace}}), do: :erlang.raise(kind, reason, stacktrace)

  defp shutdown(stop_mode, owned?, exit_mode, status, opts) do
    if stop_mode == :always or (stop_mode == :if_started and owned?) do
      stop(
        Keyword.get(opts, :shutdown_timeout, 15_000),
        Keyword.get(opts, :cleanup_timeout, 5_000)
      )
    end

    case exit_mode do
      :none ->
        :ok

      :halt ->
        System.halt(status)

      :stop ->
        System.stop(status)
        Process.sleep(:infinity)
    end
  end

  # Stopping the application stops every pool (SIGTERM, SIGKILL after the
  # pool's grace); the cleanup then catches any worker of this run left.
  defp stop(shutdown_timeout, cleanup_timeout) do
    task = Task.async(fn -> Application.stop(:snakepit) end)

    if Task.yield(task, shutdown_timeout) == nil do
      Logger.warning("Snakepit did not stop within #{shutdown_timeout} ms; going on")
    end

    if cleanup_timeout > 0 do
      with {:timeout, pids} <- Snakepit.Orphans.stop_run(cleanup_timeout) do
        Logger.warning("Snakepit workers #{inspect(pids)} outlived SIGKILL")
      end
    end
  end

  defp started?, do: List.keymember?(Application.started_applications(), :snakepit, 0)

  defp restart?(true, _stop_mode), do: true
  defp restart?(false, _stop_mode), do: false
  defp restart?(:auto, :always), do: mix_project?()
  defp restart?(:auto, _stop_mode), do: false
  defp restart?(other, _stop_mode), do: one_of!(:restart, other, [true, false, :auto])

  defp mix_project? do
    Code.ensure_loaded?(Mix.Project) and
      List.keymember?(Application.started_applications(), :mix, 0) and
      Mix.Project.get() != nil
  end

  defp exit_mode(opts, env) do
    cond do
      Keyword.has_key?(opts, :exit_mode) ->
        one_of!(:exit_mode, Keyword.fetch!(opts, :exit_mode), @exit_modes)

      Keyword.get(opts, :halt) == true ->
        :halt

      mode = env_exit_mode(env["SNAKEPIT_SCRIPT_EXIT"]) ->
        mode

      String.downcase(String.trim(env["SNAKEPIT_SCRIPT_HALT"] || "")) in @truthy ->
        :halt

      true ->
        :none
    end
  end

  defp env_exit_mode(nil), do: nil

  defp env_exit_mode(value) do
    case value |> String.trim() |> String.downcase() do
      "" ->
        nil

      text ->
        case Enum.find(@exit_modes, &(Atom.to_string(&1) == text)) do
          nil ->
            Logger.warning("invalid SNAKEPIT_SCRIPT_EXIT value #{inspect(value)}; ignored")
            nil

          mode ->
            mode
        end
    end
  end

  # :auto stops the VM only when this call owns Snakepit and the VM would
  # otherwise keep running (--no-halt); a plain script ends by itself.
  defp resolve_auto(:auto, owned?) do
    if owned? and match?({:ok, _}, :init.get_argument(:no_halt)), do: :stop, else: :none
  end

  defp resolve_auto(mode, _owned?), do: mode

  defp one_of!(option, value, allowed) do
    if value in allowed,
      do: value,
      else:
        raise(
          ArgumentError,
          "invalid #{option} #{inspect(value)}; expected one of #{inspect(allowed)}"
        )
  end
end
