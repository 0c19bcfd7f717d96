defmodule Snakepit.Orphans do
  @moduledoc """
  Finds and kills worker processes left by a BEAM that is gone.

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

  defp beam_alive?(""), do: false

  defp beam_alive?(owner) do
    case File.read("/proc/#{owner}/comm") do
      {:ok, comm} -> String.starts_with?(comm, "beam")
      {:error, _} -> false
    end
  end
end
