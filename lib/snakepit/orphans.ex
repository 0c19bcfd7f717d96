defmodule Snakepit.Orphans do
  @moduledoc """
  Finds and kills worker processes left by a BEAM that is gone, and stops
  this BEAM's own workers on request (`Snakepit.cleanup/0`).

  Workers normally die with their BEAM through the lifeline pipe; this is
  the second line of defence, run when the application boots. A worker is
  recognised by `--snakepit-run-id` on its command line; it is an orphan
  when its run id is not this BEAM's and the BEAM named by
  `--snakepit-owner-pid` is no longer running. Its whole process group is
  killed, so children it started go too.
  """
  require Logger

  @doc "Kills orphaned worker process groups; returns their OS pids."
  @spec sweep(String.t()) :: [non_neg_integer()]
  def sweep(current_run_id) do
    for {pid, run_id, owner} <- workers(), run_id != current_run_id, not beam_alive?(owner) do
      System.cmd("kill", ["-KILL", "--", "-#{pid}"], stderr_to_stdout: true)

      Logger.warning(
        "killed orphaned Snakepit worker #{pid} (run #{run_id}, owner #{owner} gone)"
      )

      pid
    end
  end

  @doc """
  Stops this BEAM's workers (those with its run id): SIGTERM to each
  worker's process group, SIGKILL to those still alive after `grace_ms`.
  Returns `:ok`, or `{:timeout, os_pids}` for workers alive even after
  SIGKILL (a process stuck in the kernel).
  """
  @spec stop_run(non_neg_integer()) :: :ok | {:timeout, [non_neg_integer()]}
  def stop_run(grace_ms) do
    {run_id, _runtime_dir} = Snakepit.Native.runtime_info()
    targets = for {pid, ^run_id, _owner} <- workers(), do: pid

    with [_ | _] <- signal_until_gone(targets, "-TERM", grace_ms),
         [_ | _] = alive <- signal_until_gone(targets, "-KILL", 1_000) do
      {:timeout, alive}
    else
      [] -> :ok
    end
  end

  defp signal_until_gone(pids, signal, wait_ms) do
    for pid <- pids, do: System.cmd("kill", [signal, "--", "-#{pid}"], stderr_to_stdout: true)
    await_gone(pids, System.monotonic_time(:millisecond) + wait_ms)
  end

  defp await_gone(pids, deadline) do
    alive = Enum.filter(pids, &alive?/1)

    if alive == [] or System.monotonic_time(:millisecond) >= deadline do
      alive
    else
      Process.sleep(50)
      await_gone(alive, deadline)
    end
  end

  # A zombie has exited; its parent (the native event loop) reaps it.
  defp alive?(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} ->
        not (stat |> String.split(") ") |> Enum.at(1, "") |> String.starts_with?("Z"))

      {:error, _} ->
        false
    end
  end

  @doc "Running Snakepit workers as `{os_pid, run_id, owner_os_pid}`."
  @spec workers() :: [{non_neg_integer(), String.t(), String.t()}]
  def workers do
    case File.ls("/proc") do
      {:ok, entries} -> Enum.flat_map(entries, &worker_entry/1)
      {:error, _} -> []
    end
  end

  defp worker_entry(entry) do
    with {pid, ""} <- Integer.parse(entry),
         {:ok, cmdline} <- File.read("/proc/#{entry}/cmdline"),
         args = String.split(cmdline, <<0>>),
         {:ok, run_id} <- flag(args, "--snakepit-run-id") do
      owner = with {:ok, owner} <- flag(args, "--snakepit-owner-pid"), do: owner, else: (_ -> "")
      [{pid, run_id, owner}]
    else
      _ -> []
    end
  end

  defp flag([name, value | _], name), do: {:ok, value}
  defp flag([_ | rest], name), do: flag(rest, name)
  defp flag([], _name), do: :error

  # No owner on the command line: not started by a pool (a test harness
  # runs workers directly), so not ours to judge.
  defp beam_alive?(""), do: true

  defp beam_alive?(owner) do
    case File.read("/proc/#{owner}/comm") do
      {:ok, comm} -> String.starts_with?(comm, "beam")
      {:error, _} -> false
    end
  end
end
