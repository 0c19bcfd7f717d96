defmodule Snakepit.MixTasks.SetupTest do
  use ExUnit.Case, async: false

  alias Snakepit.TempApp

  @moduletag timeout: 600_000

  @config """
  import Config

  config :snakepit,
    pooling_enabled: true,
    pools: [%{name: :default, pool_size: 1, adapter_args: ["--adapter", "envprobe.adapter.WhereAdapter"]}]
  """

  # No package index: these tests must pass offline, and must not depend on
  # whether this machine could reach PyPI.
  @offline [{"PIP_INDEX_URL", "http://127.0.0.1:9/simple"}]

  setup_all do
    dir = TempApp.create!(@config)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir}
  end

  setup %{dir: dir} do
    File.rm_rf!(Path.join(dir, ".venv"))
    File.write!(Path.join(dir, "requirements.txt"), "numpy>=1.0  # the venv sees Debian's\n")
    :ok
  end

  test "creates the venv offline, changes nothing the second time, and the pools then use it", %{
    dir: dir
  } do
    venv = Path.join(dir, ".venv")
    {output, status} = TempApp.mix(dir, ["snakepit.setup"], @offline)
    assert status == 0, output

    assert output =~
             ~r/^ok    venv +created #{venv} \(\S+python3 -m venv --system-site-packages\)$/m

    assert output =~ ~r/^ok    requirements +3 satisfied: grpcio, protobuf and requirements.txt$/m
    # The doctor ran, and already sees the new interpreter.
    assert output =~ ~r/^ok    interpreter +#{venv}\/bin\/python3 .*chosen by the app's .venv/m
    assert output =~ ~r/^ok    pool :default /m

    before = snapshot(dir)
    {again, status} = TempApp.mix(dir, ["snakepit.setup"], @offline)
    assert status == 0, again
    assert again =~ ~r/^ok    venv +#{venv}\/bin\/python3 exists \(the app's .venv/m
    refute again =~ "created"
    refute again =~ "installing"
    assert snapshot(dir) == before

    script = """
    :ok = Snakepit.Pool.await_ready(:default, 60_000)
    {:ok, where} = Snakepit.execute("where", %{})
    IO.puts("prefix=" <> where["prefix"])
    IO.puts("executable=" <> where["executable"])
    """

    {output, status} = TempApp.mix(dir, ["run", "-e", script])
    assert status == 0, output
    assert output =~ "prefix=#{venv}\n"
    assert output =~ "executable=#{venv}/bin/python3\n"
  end

  test "names a missing requirement and how to get it when no index is reachable", %{dir: dir} do
    File.write!(Path.join(dir, "requirements.txt"), "numpy>=1.0\nsnakepit-no-such-package==1.0\n")
    {output, status} = TempApp.mix(dir, ["snakepit.setup"], @offline)
    assert status != 0

    assert output =~
             ~r/^FAIL  requirement +snakepit-no-such-package==1\.0 is not installed for \S+\/\.venv\/bin\/python3: no package index is reachable at http:\/\/127\.0\.0\.1:9\/simple\. Get it with `\S+ -m pip install 'snakepit-no-such-package==1\.0'`/m

    assert output =~ "snakepit.setup: the Python side is not ready"
  end

  test "a fake .venv (bin/python3 linked to the system interpreter) is what the pools run", %{
    dir: dir
  } do
    venv = Path.join(dir, ".venv")
    TempApp.fake_venv!(venv)

    script = """
    :ok = Snakepit.Pool.await_ready(:default, 60_000)
    {:ok, where} = Snakepit.execute("where", %{})
    {:ok, info} = Snakepit.Pool.info(:default)
    IO.puts("prefix=" <> where["prefix"])
    IO.puts("rule=\#{info.python.rule}")
    """

    {output, status} = TempApp.mix(dir, ["run", "-e", script])
    assert status == 0, output
    assert output =~ "prefix=#{venv}\n"
    assert output =~ "rule=app_venv\n"
  end

  # Every file under the app except the build: path, size, mtime.
  defp snapshot(dir) do
    dir
    |> Path.join("**")
    |> Path.wildcard(match_dot: true)
    |> Enum.reject(&String.starts_with?(&1, Path.join(dir, "_build")))
    |> Enum.map(fn path ->
      stat = File.lstat!(path, time: :posix)
      {path, stat.size, stat.mtime}
    end)
    |> Enum.sort()
  end
end
