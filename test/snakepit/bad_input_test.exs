defmodule Snakepit.BadInputTest do
  use Snakepit.PoolCase, async: false

  defp validation_error(args) do
    assert {:error, %Snakepit.Error{category: :validation} = error} =
             Snakepit.execute("echo", args)

    error
  end

  test "args that are not a map" do
    error = validation_error([1, 2])
    assert error.message =~ "args must be a map"
  end

  test "a pid, a reference, a function and a tuple, each named by its path" do
    assert validation_error(%{owner: self()}).message =~ "args.owner is a pid"

    assert validation_error(%{items: [1, %{ref: make_ref()}]}).message =~
             "args.items[1].ref is a reference"

    assert validation_error(%{f: fn -> 1 end}).message =~ "args.f is a function"
    assert validation_error(%{pair: %{x: {1, 2}}}).message =~ "args.pair.x is a tuple"
    assert {:ok, _} = Snakepit.execute("ping", %{})
  end

  test "invalid UTF-8 in a string position" do
    error = validation_error(%{doc: %{title: <<0xFF, 0xFE>>}})
    assert error.message =~ "args.doc.title"
    assert error.message =~ "UTF-8"
    assert error.details.reason == :invalid_args
  end

  test "structs other than calendar types are refused by path" do
    error = validation_error(%{range: %{r: 1..3}})
    assert error.message =~ "args.range.r is a Range struct"
  end

  test "the pool keeps serving after every kind of bad input" do
    for args <- [%{a: self()}, %{b: {1}}, :not_a_map, %{c: [<<0xFF>>]}] do
      assert {:error, %Snakepit.Error{category: :validation}} = Snakepit.execute("echo", args)
    end

    assert {:ok, 3} = Snakepit.execute("add", %{a: 1, b: 2})
  end

  test "an invalid config value raises naming the key, the value and what is allowed" do
    error =
      assert_raise ArgumentError, fn ->
        Snakepit.Config.normalize_pool(%{name: :bad, pool_size: -1})
      end

    assert error.message =~ ":pool_size"
    assert error.message =~ "-1"
    assert error.message =~ "positive integer"
  end

  test "an adapter that fails to import: await_ready returns the Python traceback" do
    config =
      Snakepit.Config.normalize_pool(%{
        name: :broken_adapter,
        pool_size: 1,
        adapter_args: ["--adapter", "no_such_package.adapters.Missing"],
        restart_backoff_ms: 200
      })

    start_supervised!({Snakepit.Pool, config})

    assert {:error, %Snakepit.Error{} = error} =
             Snakepit.Pool.await_ready(:broken_adapter, 30_000)

    assert error.python_traceback =~ "Traceback"
    assert error.python_traceback =~ "no_such_package"
    assert error.details.python_type == "ModuleNotFoundError"
  end

  test "a configured interpreter that cannot import grpc is a clear error" do
    error =
      assert_raise ArgumentError, fn ->
        Snakepit.PythonRuntime.resolve!(python_executable: "/bin/false")
      end

    assert error.message =~ "cannot import grpc"
    assert error.message =~ ":python_executable"
    assert Snakepit.PythonRuntime.resolve!(python_executable: nil).path |> File.exists?()
  end
end
