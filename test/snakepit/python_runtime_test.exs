defmodule Snakepit.PythonRuntimeTest do
  # Changes environment variables and the :snakepit config: not async.
  use Snakepit.PoolCase, async: false

  alias Snakepit.{PythonRuntime, TempApp}

  setup do
    saved_env = Map.new(["VIRTUAL_ENV", "SNAKEPIT_PYTHON"], &{&1, System.get_env(&1)})

    saved_config =
      Map.new(
        [:python_executable, :python_runtime, :python],
        &{&1, Application.get_env(:snakepit, &1)}
      )

    System.delete_env("VIRTUAL_ENV")
    System.delete_env("SNAKEPIT_PYTHON")
    Enum.each(Map.keys(saved_config), &Application.delete_env(:snakepit, &1))

    tmp = Path.join(System.tmp_dir!(), "snakepit_runtime_#{System.unique_integer([:positive])}")
    app = Path.join(tmp, "app")
    File.mkdir_p!(app)

    on_exit(fn ->
      Enum.each(saved_env, fn
        {name, nil} -> System.delete_env(name)
        {name, value} -> System.put_env(name, value)
      end)

      Enum.each(saved_config, fn
        {key, nil} -> Application.delete_env(:snakepit, key)
        {key, value} -> Application.put_env(:snakepit, key, value)
      end)

      File.rm_rf!(tmp)
    end)

    %{tmp: tmp, app: app}
  end

  describe "the rule order" do
    test "no venv anywhere: the first system interpreter that imports grpc", %{app: app} do
      assert {:ok, %{rule: :system, path: path, reason: reason}} =
               PythonRuntime.resolve(root: app)

      assert {_, 0} = System.cmd(path, ["-c", "import grpc"])
      assert reason =~ "system interpreter"
    end

    test "the app's .venv, then ../.venv", %{tmp: tmp, app: app} do
      parent = TempApp.fake_venv!(Path.join(tmp, ".venv"))
      assert {:ok, %{rule: :parent_venv, path: ^parent}} = PythonRuntime.resolve(root: app)

      own = TempApp.fake_venv!(Path.join(app, ".venv"))

      assert {:ok, %{rule: :app_venv, path: ^own, reason: reason}} =
               PythonRuntime.resolve(root: app)

      assert reason =~ "the app's .venv"
    end

    test "$VIRTUAL_ENV before the app's .venv, only when its bin/python3 exists", %{
      tmp: tmp,
      app: app
    } do
      TempApp.fake_venv!(Path.join(app, ".venv"))
      System.put_env("VIRTUAL_ENV", Path.join(tmp, "nothing_here"))
      assert {:ok, %{rule: :app_venv}} = PythonRuntime.resolve(root: app)

      active = TempApp.fake_venv!(Path.join(tmp, "active"))
      System.put_env("VIRTUAL_ENV", Path.join(tmp, "active"))

      assert {:ok, %{rule: :virtual_env, path: ^active, reason: reason}} =
               PythonRuntime.resolve(root: app)

      assert reason =~ "$VIRTUAL_ENV"
    end

    test ":python_runtime before $VIRTUAL_ENV; SNAKEPIT_PYTHON before that; :python_executable first",
         %{tmp: tmp, app: app} do
      TempApp.fake_venv!(Path.join(tmp, "active"))
      System.put_env("VIRTUAL_ENV", Path.join(tmp, "active"))
      managed = TempApp.fake_venv!(Path.join([app, "priv/snakepit/python"]))

      Application.put_env(:snakepit, :python_runtime, %{strategy: :managed})
      assert {:ok, %{rule: :python_runtime, path: ^managed}} = PythonRuntime.resolve(root: app)

      Application.put_env(:snakepit, :python_runtime, strategy: :system)
      assert {:ok, %{rule: :python_runtime, path: system}} = PythonRuntime.resolve(root: app)
      refute system =~ tmp

      by_env = TempApp.fake_venv!(Path.join(tmp, "by_env"))
      System.put_env("SNAKEPIT_PYTHON", by_env)
      assert {:ok, %{rule: :snakepit_python, path: ^by_env}} = PythonRuntime.resolve(root: app)

      by_config = TempApp.fake_venv!(Path.join(tmp, "by_config"))
      Application.put_env(:snakepit, :python_executable, by_config)

      assert {:ok, %{rule: :python_executable, path: ^by_config}} =
               PythonRuntime.resolve(root: app)

      # A pool's own value wins over the global one.
      assert {:ok, %{rule: :python_executable, path: ^by_env}} =
               PythonRuntime.resolve(root: app, python_executable: by_env)
    end

    test "upstream's :python key is read as :python_runtime", %{app: app} do
      managed = TempApp.fake_venv!(Path.join([app, "rt"]))
      Application.put_env(:snakepit, :python, managed: true, runtime_dir: "rt")
      assert {:ok, %{rule: :python_runtime, path: ^managed}} = PythonRuntime.resolve(root: app)
      assert PythonRuntime.managed?()
    end
  end

  describe "errors name the rule" do
    test "a named interpreter that does not exist", %{app: app} do
      assert {:error, message} =
               PythonRuntime.resolve(root: app, python_executable: "./nope/python3")

      assert message =~ ":python_executable"
      assert message =~ "./nope/python3"

      System.put_env("SNAKEPIT_PYTHON", "no-such-python-here")
      assert {:error, message} = PythonRuntime.resolve(root: app)
      assert message =~ "SNAKEPIT_PYTHON"
      assert message =~ "on PATH"
    end

    test "a .venv that cannot import grpc is reported, not skipped", %{app: app} do
      venv = Path.join(app, ".venv")
      {_, 0} = System.cmd("/usr/bin/python3", ["-m", "venv", "--without-pip", venv])

      assert {:error, message} = PythonRuntime.resolve(root: app)
      assert message =~ Path.join(venv, "bin/python3")
      assert message =~ "the app's .venv"
      assert message =~ "cannot import grpc"
      assert message =~ "ModuleNotFoundError"
    end

    test "bad :python_runtime values", %{app: app} do
      Application.put_env(:snakepit, :python_runtime, %{strategy: :conda})
      assert {:error, message} = PythonRuntime.resolve(root: app)
      assert message =~ ":python_runtime strategy"
      assert message =~ ":conda"
      assert message =~ ":system, :venv, :managed, :uv"

      Application.put_env(:snakepit, :python_runtime, %{strategy: :venv})
      assert {:error, message} = PythonRuntime.resolve(root: app)
      assert message =~ "mix snakepit.setup"

      Application.put_env(:snakepit, :python_runtime, %{
        strategy: :managed,
        runtime_dir: "/nonexistent/rt"
      })

      assert {:error, message} = PythonRuntime.resolve(root: app)
      assert message =~ "/nonexistent/rt"
    end
  end

  describe "pools" do
    test "a pool runs the interpreter of $VIRTUAL_ENV", %{tmp: tmp} do
      venv_python = TempApp.fake_venv!(Path.join(tmp, "venv"))
      System.put_env("VIRTUAL_ENV", Path.join(tmp, "venv"))

      pool =
        start_pool!(
          name: :venv_pool,
          pool_size: 1,
          adapter_args: ["--adapter", "envprobe.adapter.WhereAdapter"],
          adapter_env: [{"PYTHONPATH", Path.expand("../fixtures/app_python", __DIR__)}]
        )

      {:ok, [worker]} = Snakepit.Pool.workers(pool)
      [argv0 | _] = File.read!("/proc/#{worker.os_pid}/cmdline") |> String.split(<<0>>)
      assert argv0 == venv_python

      assert {:ok, %{python: %{rule: :virtual_env, path: ^venv_python}}} =
               Snakepit.Pool.info(pool)

      # The interpreter ran as the venv's: its prefix is the venv.
      assert {:ok, %{"prefix" => prefix}} = Snakepit.execute("where", %{}, pool_name: pool)
      assert prefix == Path.join(tmp, "venv")
    end

    test "the start error says which interpreter ran, which rule chose it, and the PYTHONPATH",
         %{tmp: tmp} do
      TempApp.fake_venv!(Path.join(tmp, "venv"))
      System.put_env("VIRTUAL_ENV", Path.join(tmp, "venv"))

      config =
        Snakepit.Config.normalize_pool(%{
          name: :missing_adapter,
          pool_size: 1,
          startup_batch_delay_ms: 0,
          adapter_args: ["--adapter", "no_such_package_xyz.Adapter"]
        })

      start_supervised!({Snakepit.Pool, config})
      assert {:error, error} = Snakepit.Pool.await_ready(:missing_adapter, 30_000)
      assert error.message =~ "No module named 'no_such_package_xyz'"
      assert error.message =~ "chosen by $VIRTUAL_ENV (#{Path.join(tmp, "venv")})"
      assert error.message =~ "PYTHONPATH #{Snakepit.Python.bridge_dir()}"
      assert error.details.python_rule == :virtual_env
      assert error.python_traceback =~ "ModuleNotFoundError"
    end
  end

  test "PYTHONPATH: the bridge, then adapter_env's, then the inherited one, each once" do
    bridge = Snakepit.Python.bridge_dir()
    # Here the app is Snakepit itself: its priv/python is the bridge.
    assert [^bridge, "/opt/a", "/opt/b" | _] = Snakepit.Python.python_path("/opt/a:/opt/b:/opt/a")
    assert Snakepit.Python.python_path(nil) |> Enum.count(&(&1 == bridge)) == 1
  end
end
