defmodule Snakepit.BeamKillTest do
  use Snakepit.PoolCase, async: false

  @script """
  Application.put_env(:snakepit, :pooling_enabled, true)
  Application.put_env(:snakepit, :pools, [%{name: :default, pool_size: 4, startup_batch_delay_ms: 0}])
  {:ok, _} = Application.ensure_all_started(:snakepit)
  :ok = Snakepit.Pool.await_init_complete(Snakepit.Pool, 60_000)
  {:ok, workers} = Snakepit.Pool.workers(:default)
  IO.puts("BEAM=\#{System.pid()} WORKERS=\#{Enum.map_join(workers, ",", & &1.os_pid)}")
  Process.sleep(:infinity)
  """

  test "a BEAM killed with SIGKILL leaves none of its Python processes after 2 s" do
    script =
      Path.join(System.tmp_dir!(), "snakepit_beam_kill_#{System.unique_integer([:positive])}.exs")

    File.write!(script, @script)
    on_exit(fn -> File.rm(script) end)
    ebin = :snakepit |> :code.lib_dir() |> Path.join("ebin")

    port =
      Port.open({:spawn_executable, System.find_executable("elixir")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        line: 4096,
        args: ["-pa", ebin, script]
      ])

    {beam, workers} = await_report(port, "")
    assert length(workers) == 4
    assert Enum.all?(workers, &os_alive?/1)
    groups = MapSet.new(workers)

    System.cmd("kill", ["-KILL", Integer.to_string(beam)])
    Process.sleep(2_000)

    survivors = for pid <- workers, os_alive?(pid), do: pid
    assert survivors == []
    assert processes_in_groups(groups) == []
  end

  @script_helper """
  Application.put_env(:snakepit, :pooling_enabled, true)
  Application.put_env(:snakepit, :pools, [%{name: :default, pool_size: 2, startup_batch_delay_ms: 0}])

  {:ok, pong} =
    Snakepit.run_as_script(fn ->
      {:ok, workers} = Snakepit.Pool.workers(:default)
      IO.puts("PIDS=\#{Enum.map_join(workers, ",", & &1.os_pid)}")
      Snakepit.execute("ping", %{})
    end)

  IO.puts("RESULT=\#{pong["message"]}")
  """

  test "run_as_script runs the function with ready pools, then stops every worker" do
    script =
      Path.join(System.tmp_dir!(), "snakepit_script_#{System.unique_integer([:positive])}.exs")

    File.write!(script, @script_helper)
    on_exit(fn -> File.rm(script) end)
    ebin = :snakepit |> :code.lib_dir() |> Path.join("ebin")

    {output, 0} =
      System.cmd(System.find_executable("elixir"), ["-pa", ebin, script], stderr_to_stdout: true)

    assert output =~ "RESULT=pong"
    [_, pids] = Regex.run(~r/PIDS=([\d,]+)/, output)
    workers = pids |> String.split(",") |> Enum.map(&String.to_integer/1)
    assert length(workers) == 2
    assert Enum.all?(workers, &(not os_alive?(&1)))
  end

  defp await_report(port, seen) do
    receive do
      {^port, {:data, {:eol, "BEAM=" <> rest}}} ->
        [beam, "WORKERS=" <> pids] = String.split(rest, " ")
        {String.to_integer(beam), pids |> String.split(",") |> Enum.map(&String.to_integer/1)}

      {^port, {:data, {_, line}}} ->
        await_report(port, seen <> line <> "\n")

      {^port, {:exit_status, status}} ->
        flunk("the BEAM under test exited with #{status}:\n#{seen}")
    after
      60_000 -> flunk("no report from the BEAM under test:\n#{seen}")
    end
  end

  # Every live process whose process group is one of the workers' groups.
  defp processes_in_groups(groups) do
    for entry <- File.ls!("/proc"),
        match?({_, ""}, Integer.parse(entry)),
        {:ok, stat} <- [File.read("/proc/#{entry}/stat")],
        [_, after_comm] <- [String.split(stat, ") ", parts: 2)],
        [state, _ppid, pgrp | _] = String.split(after_comm, " "),
        state != "Z",
        MapSet.member?(groups, String.to_integer(pgrp)),
        do: String.to_integer(entry)
  end
end
