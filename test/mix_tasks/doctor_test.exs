defmodule Snakepit.MixTasks.DoctorTest do
  use ExUnit.Case, async: false

  alias Snakepit.TempApp

  @moduletag timeout: 600_000

  # One app; the pools come from CASE so every test shares its build.
  @config """
  import Config

  pools =
    case System.get_env("CASE") do
      "broken" ->
        [
          %{name: :default, pool_size: 1},
          %{name: :broken, pool_size: 1, adapter_args: ["--adapter", "no_such_package_xyz.Adapter"]}
        ]

      "thread" ->
        [
          %{name: :safe, worker_profile: :thread, threads_per_worker: 2, pool_size: 1},
          %{
            name: :unsafe,
            worker_profile: :thread,
            threads_per_worker: 2,
            pool_size: 1,
            adapter_args: ["--adapter", "envprobe.adapter.NotThreadSafeAdapter"]
          }
        ]

      _ ->
        [
          %{name: :default, pool_size: 1},
          %{name: :app_adapter, pool_size: 1, adapter_args: ["--adapter", "envprobe.adapter.WhereAdapter"]}
        ]
    end

  config :snakepit, pooling_enabled: true, pools: pools
  """

  setup_all do
    dir = TempApp.create!(@config)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir}
  end

  test "passes on a good config, one line per check", %{dir: dir} do
    {output, status} = TempApp.mix(dir, ["snakepit.doctor"])
    assert status == 0, output

    for line <- [
          ~r/^ok    config +2 pools: :default, :app_adapter$/m,
          ~r/^ok    interpreter +\/\S+python3 \(Python 3\.\d+\.\d+, GIL\), chosen by the first system interpreter that can import grpc$/m,
          ~r/^ok    grpc +grpcio \d\S*, protobuf \d\S*$/m,
          ~r/^ok    worker server +grpc's core layer: grpcio \d\S* has the core layer it needs$/m,
          ~r/^(ok  |warn)  numpy /m,
          ~r/^ok    nif +\S+snakepit_nif\.so loaded$/m,
          ~r/^ok    runtime dir +\S+ \(mode 0700, owned by uid \d+, writable\)$/m,
          ~r/^ok    pool :default +snakepit_bridge\.adapters\.showcase\.ShowcaseAdapter imports and builds/m,
          # The app's priv/python is found with no adapter_env.
          ~r/^ok    pool :app_adapter +envprobe\.adapter\.WhereAdapter imports and builds/m,
          ~r/^ok    hardware +linux-\S+, .+ cores \/ \d+ threads, \d+ MB, accelerator \w+/m
        ] do
      assert output =~ line
    end
  end

  test "names the worker server SNAKEPIT_WORKER_SERVER forces, and refuses a bad value", %{
    dir: dir
  } do
    {output, status} =
      TempApp.mix(dir, ["snakepit.doctor"], [{"SNAKEPIT_WORKER_SERVER", "fallback"}])

    assert status == 0, output

    assert output =~
             ~r/^ok    worker server +grpc\.server fallback \(about twice the CPU per call\): forced by --server fallback or SNAKEPIT_WORKER_SERVER=fallback$/m

    {output, status} =
      TempApp.mix(dir, ["snakepit.doctor"], [{"SNAKEPIT_WORKER_SERVER", "fastest"}])

    assert status != 0

    assert output =~
             ~r/^FAIL  worker server +SNAKEPIT_WORKER_SERVER \/ --server must be one of auto, core, fallback, got 'fastest'$/m
  end

  test "fails, naming the pool and showing the traceback, on an adapter that does not import", %{
    dir: dir
  } do
    {output, status} = TempApp.mix(dir, ["snakepit.doctor"], [{"CASE", "broken"}])
    assert status != 0
    assert output =~ ~r/^ok    pool :default /m

    assert output =~
             ~r/^FAIL  pool :broken +no_such_package_xyz\.Adapter: No module named 'no_such_package_xyz'/m

    assert output =~ ~r/^        Traceback \(most recent call last\):$/m
    assert output =~ ~r/^        ModuleNotFoundError: No module named 'no_such_package_xyz'$/m
    assert output =~ "snakepit.doctor: 1 check(s) failed"
  end

  test "checks __thread_safe__ for thread-profile pools", %{dir: dir} do
    {output, status} = TempApp.mix(dir, ["snakepit.doctor"], [{"CASE", "thread"}])
    assert status != 0

    assert output =~
             ~r/^ok    pool :safe +snakepit_bridge\.adapters\.showcase\.ShowcaseAdapter imports and builds \(thread profile/m

    assert output =~ ~r/^ok    pool :safe +\S+ declares __thread_safe__ = True$/m

    assert output =~
             ~r/^FAIL  pool :unsafe +envprobe\.adapter\.NotThreadSafeAdapter does not declare __thread_safe__ = True/m
  end

  test "--json prints one JSON object with the same checks", %{dir: dir} do
    {json, status} =
      TempApp.mix(dir, ["snakepit.doctor", "--json"], [{"CASE", "broken"}], stderr: false)

    assert status != 0

    # Python's json module is the parser: the output must be strict JSON.
    file = Path.join(dir, "doctor.json")
    File.write!(file, json)

    script = """
    import json, sys
    report = json.load(open(sys.argv[1]))
    print(report["ok"])
    for check in report["checks"]:
        print(check["name"], check["label"], check["status"], sep="|")
    broken = [c for c in report["checks"] if c["label"] == "pool :broken"][0]
    print("traceback" if "ModuleNotFoundError" in broken["details"]["traceback"] else "no traceback")
    print(report["checks"][-1]["details"]["cpu"]["threads"])
    """

    {parsed, 0} = System.cmd("/usr/bin/python3", ["-c", script, file], stderr_to_stdout: true)
    [ok | lines] = String.split(parsed, "\n", trim: true)
    assert ok == "False"
    assert "interpreter|interpreter|ok" in lines
    assert "grpc|grpc|ok" in lines
    assert "adapter|pool :default|ok" in lines
    assert "adapter|pool :broken|error" in lines
    assert "traceback" in lines
    assert List.last(lines) == Integer.to_string(Snakepit.Hardware.detect().cpu.threads)
  end
end
