defmodule Snakepit.MixTasks.GenAdapterTest do
  use ExUnit.Case, async: false

  alias Snakepit.TempApp

  @moduletag timeout: 600_000

  setup_all do
    dir = TempApp.create!("import Config\n")
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir}
  end

  describe "mix snakepit.gen.adapter" do
    test "writes an adapter that serves its tool as generated, with the config it prints", %{
      dir: dir
    } do
      {output, status} = TempApp.mix(dir, ["snakepit.gen.adapter", "my_model"])
      assert status == 0, output

      for file <- [
            "priv/python/my_model/__init__.py",
            "priv/python/my_model/adapter.py",
            "test/python/test_my_model_adapter.py"
          ] do
        assert output =~ ~r/^ok    created +#{Regex.escape(file)}$/m
        assert File.regular?(Path.join(dir, file))
      end

      adapter = File.read!(Path.join(dir, "priv/python/my_model/adapter.py"))
      assert adapter =~ "class MyModelAdapter(BaseAdapter):"
      assert adapter =~ "def initialize(self) -> None:"
      assert adapter =~ "@tool("

      # The printed snippet goes into the config unedited.
      [snippet] = Regex.run(~r/^    config :snakepit,\n.*?^      \]\n/ms, output)

      File.write!(
        Path.join(dir, "config/config.exs"),
        "import Config\n\n" <> String.replace(snippet, ~r/^    /m, "")
      )

      {output, status} =
        TempApp.mix(dir, ["run", "-e", ~s|IO.inspect(Snakepit.execute("greet", %{name: "Ada"}))|])

      assert status == 0, output
      assert output =~ ~s|{:ok, %{"message" => "Hello, Ada!"}}|

      # A second run refuses and leaves the files alone.
      File.write!(Path.join(dir, "priv/python/my_model/adapter.py"), adapter <> "# edited\n")
      {output, status} = TempApp.mix(dir, ["snakepit.gen.adapter", "my_model"])
      assert status != 0
      assert output =~ "refusing to overwrite priv/python/my_model/__init__.py"

      assert File.read!(Path.join(dir, "priv/python/my_model/adapter.py")) ==
               adapter <> "# edited\n"
    end

    test "refuses names that are not identifiers or that would hide a module", %{dir: dir} do
      {output, status} = TempApp.mix(dir, ["snakepit.gen.adapter", "My-Model"])
      assert status != 0
      assert output =~ "\"My-Model\" is not a lowercase Python identifier"

      {output, status} = TempApp.mix(dir, ["snakepit.gen.adapter", "json"])
      assert status != 0
      assert output =~ "\"json\" is already a module"
      refute File.exists?(Path.join(dir, "priv/python/json"))
    end
  end

  describe "mix snakepit.python_test" do
    test "runs the bridge's suite and the app's tests; its exit status is pytest's", %{dir: dir} do
      {_, 0} = TempApp.mix(dir, ["snakepit.gen.adapter", "pt_model"])

      # -k keeps the bridge's part short: its adapter unit tests.
      {output, status} =
        TempApp.mix(dir, [
          "snakepit.python_test",
          "--",
          "-q",
          "-k",
          "test_adapter_unit or pt_model"
        ])

      assert status == 0, output
      assert output =~ ~r/^==> bridge: \S+python3 -m pytest \S+\/test\/python -q -k/m

      assert output =~
               ~r/^==> app: \S+python3 -m pytest #{Regex.escape(dir)}\/test\/python -q -k/m

      assert output =~ ~r/^\d+ passed, \d+ deselected/m
      assert output =~ ~r/^2 passed/m

      failing = Path.join(dir, "test/python/test_failing.py")
      File.write!(failing, "def test_fails() -> None:\n    assert 1 == 2\n")

      try do
        {output, status} =
          TempApp.mix(dir, ["snakepit.python_test", "--only", "app", "--", "-q", "-k", "failing"])

        assert status == 1, output
        refute output =~ "==> bridge"
        assert output =~ "1 failed"

        # No test collected is pytest's status 5, passed on as it is.
        {output, status} =
          TempApp.mix(dir, [
            "snakepit.python_test",
            "--only",
            "app",
            "--",
            "-q",
            "-k",
            "nothing_matches"
          ])

        assert status == 5, output
      after
        File.rm!(failing)
      end
    end
  end
end
