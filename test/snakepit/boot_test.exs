defmodule Snakepit.BootTest do
  @moduledoc """
  Application boot as upstream users configure it: asynchronous pools, a
  failed pool next to healthy ones, pooling_enabled, ignored keys, and
  run_as_script's options. Each test boots the application with its own
  config; the suite's config is restored afterwards.
  """
  use Snakepit.PoolCase, async: false
  import ExUnit.CaptureLog

  @fixtures Path.expand("../fixtures/python", __DIR__)

  setup do
    saved = Application.get_all_env(:snakepit)

    on_exit(fn ->
      Application.stop(:snakepit)

      for {key, _} <- Application.get_all_env(:snakepit),
          do: Application.delete_env(:snakepit, key)

      for {key, value} <- saved, do: Application.put_env(:snakepit, key, value)
      {:ok, _} = Application.ensure_all_started(:snakepit)
      :ok = Snakepit.Pool.await_ready(Snakepit.Pool, 60_000)
    end)

    :ok
  end

  # Boots the application with exactly `env` as its :snakepit config.
  defp boot(env) do
    Application.stop(:snakepit)
    for {key, _} <- Application.get_all_env(:snakepit), do: Application.delete_env(:snakepit, key)
    for {key, value} <- env, do: Application.put_env(:snakepit, key, value)
    Application.ensure_all_started(:snakepit)
  end

  defp started?, do: List.keymember?(Application.started_applications(), :snakepit, 0)

  describe "boot" do
    test "a broken pool is marked failed; the application and the healthy pool serve" do
      assert {:ok, _} =
               boot(
                 pooling_enabled: true,
                 pools: [
                   %{
                     name: :broken,
                     pool_size: 1,
                     adapter_args: ["--adapter", "no_such_pkg.Missing"]
                   },
                   %{name: :healthy, pool_size: 1, startup_batch_delay_ms: 0},
                   %{name: :no_python, pool_size: 1, python_executable: "/nonexistent/python3"}
                 ]
               )

      assert is_pid(Process.whereis(Snakepit.Pool))
      assert Snakepit.Pool.Supervisor.pool_names() == [:broken, :healthy, :no_python]
      assert :ok = Snakepit.Pool.await_ready(:healthy, 30_000)
      assert {:ok, 3} = Snakepit.execute("add", %{a: 1, b: 2}, pool_name: :healthy)

      assert {:error, %Snakepit.Error{category: :pool} = error} =
               Snakepit.Pool.await_ready(:broken, 30_000)

      assert error.details.reason == :pool_not_initialized
      assert error.python_traceback =~ "no_such_pkg"
      assert error.details.python_type == "ModuleNotFoundError"

      assert {:error, %Snakepit.Error{category: :pool, details: details} = error} =
               Snakepit.execute("ping", %{}, pool_name: :broken)

      assert details.reason == :pool_not_initialized
      assert details.command == "ping"
      assert details.python_traceback =~ "Traceback"
      assert details.python_traceback =~ "no_such_pkg"
      assert Exception.message(error) =~ "pool :broken failed to start"

      # The default pool (the first) is the broken one: calls say so at once.
      assert {:error, %Snakepit.Error{details: %{reason: :pool_not_initialized}}} =
               Snakepit.execute("ping", %{})

      # Without an interpreter the pool cannot even start; it is failed too.
      assert {:error,
              %Snakepit.Error{details: %{reason: :pool_not_initialized}, message: message}} =
               Snakepit.execute("ping", %{}, pool_name: :no_python)

      assert message =~ "/nonexistent/python3"

      assert {:error, %Snakepit.Error{details: %{reason: :pool_not_initialized}}} =
               Snakepit.Pool.await_ready(Snakepit.Pool, 30_000)

      # The failed pool's workers keep retrying with backoff; its stats stay readable.
      assert %{ready: 0, worker_restarts: restarts} = Snakepit.get_stats(:broken)
      assert restarts >= 0
      assert {:ok, _} = Snakepit.execute("ping", %{}, pool_name: :healthy)
    end

    test "pools start asynchronously: the application is up before any worker is" do
      assert {:ok, _} =
               boot(
                 pooling_enabled: true,
                 pools: [
                   %{
                     name: :slow,
                     pool_size: 1,
                     adapter_args: ["--adapter", "snakepit_exunit_adapters.SlowLoadAdapter"],
                     adapter_env: [{"PYTHONPATH", @fixtures}, {"SLOW_LOAD_MS", "2000"}]
                   }
                 ]
               )

      assert Snakepit.get_stats(:slow).ready == 0
      # A call made meanwhile waits in the queue for the first worker.
      assert {:ok, pid} = Snakepit.execute("whoami", %{}, pool_name: :slow, timeout: 30_000)
      assert is_integer(pid)
    end

    test "pooling_enabled defaults to false: no pool, and calls say how to enable pooling" do
      assert {:ok, _} = boot(pools: [%{name: :default, pool_size: 1}])
      assert is_pid(Process.whereis(Snakepit.Pool))
      assert Snakepit.Pool.Supervisor.pool_names() == []

      assert {:error, %Snakepit.Error{category: :pool, message: message}} =
               Snakepit.execute("ping", %{})

      assert message =~ "pooling is disabled"
      assert message =~ "config :snakepit, pooling_enabled: true"
      assert :ok = Snakepit.Pool.await_ready()
    end

    test "unknown and meaningless keys: one warning naming them, whatever log_level, and the boot goes on" do
      log =
        capture_log(fn ->
          assert {:ok, _} =
                   boot(
                     pooling_enabled: true,
                     log_level: :none,
                     grpc_listener: %{mode: :internal},
                     instance_name: "demo",
                     grpc_timeout: 60_000,
                     heartbeat: %{"ping_interval_ms" => 1_000, "beats" => 2},
                     pool_config: %{pool_size: 1, max_overflow: 2, strategy: :fifo}
                   )
        end)

      assert [line] = log |> String.split("\n") |> Enum.filter(&(&1 =~ "Snakepit ignores"))
      assert line =~ "[warning]"

      for key <- [
            ":grpc_listener",
            ":instance_name",
            ":grpc_timeout",
            ~s("beats"),
            ":max_overflow",
            ":strategy"
          ],
          do: assert(line =~ key)

      assert :ok = Snakepit.Pool.await_ready(:default, 30_000)
      assert {:ok, _} = Snakepit.execute("ping", %{})
    end

    test "a known key with a bad value stops the boot, naming the key, the value and what is allowed" do
      assert {:error, reason} =
               boot(pooling_enabled: true, pools: [%{name: :default, pool_size: 0}])

      text = inspect(reason)
      assert text =~ ":pool_size"
      assert text =~ "0"
      assert text =~ "a positive integer"

      assert {:error, reason} = boot(pooling_enabled: true, timeout_profile: :fastest)
      assert inspect(reason) =~ ":timeout_profile"
    end
  end

  describe "run_as_script/2" do
    test "restart: true applies the script's config to an already started Snakepit" do
      assert started?()
      Application.put_env(:snakepit, :pools, [%{name: :script_pool, pool_size: 1}])

      assert [:script_pool] =
               Snakepit.run_as_script(fn -> Snakepit.Pool.Supervisor.pool_names() end,
                 restart: true
               )

      # Restarted by the script, so owned by it (stop_mode :if_started): stopped.
      refute started?()
    end

    test "pools not ready within :timeout: {:error, :pool_initialization_timeout}, Snakepit stopped" do
      Application.put_env(:snakepit, :pools, [
        %{
          name: :slow_script,
          pool_size: 1,
          adapter_args: ["--adapter", "snakepit_exunit_adapters.SlowLoadAdapter"],
          adapter_env: [{"PYTHONPATH", @fixtures}, {"SLOW_LOAD_MS", "5000"}]
        }
      ])

      assert {:error, :pool_initialization_timeout} =
               Snakepit.run_as_script(fn -> flunk("must not run") end, restart: true, timeout: 300)

      refute started?()
    end

    test "a pool that fails to start: its error, with the traceback" do
      Application.put_env(:snakepit, :pools, [
        %{name: :broken_script, pool_size: 1, adapter_args: ["--adapter", "no_such_pkg.Gone"]}
      ])

      assert {:error, %Snakepit.Error{details: %{reason: :pool_not_initialized}} = error} =
               Snakepit.run_as_script(fn -> flunk("must not run") end,
                 restart: true,
                 timeout: 30_000
               )

      assert error.python_traceback =~ "no_such_pkg"
    end

    test "an exception in fun is re-raised after the shutdown; no worker of this run is left" do
      Application.put_env(:snakepit, :pools, [%{name: :raising, pool_size: 1}])

      assert_raise RuntimeError, "script failed", fn ->
        Snakepit.run_as_script(fn -> raise "script failed" end, restart: true, timeout: 30_000)
      end

      refute started?()
      {run_id, _} = Snakepit.Native.runtime_info()
      assert for({_pid, ^run_id, _} <- Snakepit.Orphans.workers(), do: :worker) == []
    end

    test "await_pool: false runs fun without waiting; stop_mode: :never leaves Snakepit running" do
      Application.put_env(:snakepit, :pools, [
        %{
          name: :not_awaited,
          pool_size: 1,
          adapter_args: ["--adapter", "snakepit_exunit_adapters.SlowLoadAdapter"],
          adapter_env: [{"PYTHONPATH", @fixtures}, {"SLOW_LOAD_MS", "2000"}]
        }
      ])

      assert 0 =
               Snakepit.run_as_script(fn -> Snakepit.get_stats(:not_awaited).ready end,
                 restart: true,
                 await_pool: false,
                 stop_mode: :never
               )

      assert started?()
    end

    test "invalid exit_mode, stop_mode or restart raise ArgumentError" do
      for opts <- [[exit_mode: :explode], [stop_mode: :sometimes], [restart: :maybe]] do
        assert_raise ArgumentError, fn -> Snakepit.run_as_script(fn -> :ok end, opts) end
      end
    end

    @exit_script """
    Application.put_env(:snakepit, :pooling_enabled, false)
    opts = Code.eval_string(System.fetch_env!("SCRIPT_OPTS")) |> elem(0)
    fun = if System.get_env("SCRIPT_RAISE"), do: fn -> raise "boom" end, else: fn -> :done end

    try do
      IO.puts("RESULT=" <> inspect(Snakepit.run_as_script(fun, opts)))
    rescue
      error -> IO.puts("RAISED=" <> Exception.message(error))
    end

    IO.puts("AFTER")
    """

    defp run_exit_script(opts, env) do
      script =
        Path.join(System.tmp_dir!(), "snakepit_exit_#{System.unique_integer([:positive])}.exs")

      File.write!(script, @exit_script)
      on_exit(fn -> File.rm(script) end)
      ebin = :snakepit |> :code.lib_dir() |> Path.join("ebin")

      System.cmd(System.find_executable("elixir"), ["-pa", ebin, script],
        env: [{"SCRIPT_OPTS", inspect(opts)} | env],
        stderr_to_stdout: true
      )
    end

    test "exit_mode :none returns; :halt halts with status 0, or 1 when fun raised" do
      assert {output, 0} = run_exit_script([], [])
      assert output =~ "RESULT=:done" and output =~ "AFTER"

      assert {output, 0} = run_exit_script([exit_mode: :halt], [])
      refute output =~ "RESULT="
      refute output =~ "AFTER"

      assert {output, 1} = run_exit_script([exit_mode: :halt], [{"SCRIPT_RAISE", "1"}])
      refute output =~ "AFTER"
    end

    test "SNAKEPIT_SCRIPT_EXIT and SNAKEPIT_SCRIPT_HALT, and halt: true" do
      assert {output, 0} = run_exit_script([], [{"SNAKEPIT_SCRIPT_EXIT", "halt"}])
      refute output =~ "AFTER"

      assert {output, 0} = run_exit_script([], [{"SNAKEPIT_SCRIPT_HALT", "true"}])
      refute output =~ "AFTER"

      assert {output, 0} = run_exit_script([halt: true], [])
      refute output =~ "AFTER"

      # An explicit exit_mode wins over the environment.
      assert {output, 0} = run_exit_script([exit_mode: :none], [{"SNAKEPIT_SCRIPT_EXIT", "halt"}])
      assert output =~ "AFTER"

      # :auto only stops a VM that would keep running (--no-halt): a script returns.
      assert {output, 0} = run_exit_script([exit_mode: :auto], [])
      assert output =~ "AFTER"

      # :stop stops the VM gracefully with the status.
      assert {output, 1} = run_exit_script([exit_mode: :stop], [{"SCRIPT_RAISE", "1"}])
      refute output =~ "AFTER"
    end
  end
end
