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

  test "an atom key outside Latin-1 encodes as UTF-8 and keeps every argument" do
    assert {:ok, %{"echoed" => %{"日本" => 1, "value" => 2}}} =
             Snakepit.execute("echo", %{:日本 => 1, "value" => 2})

    assert {:ok, %{"echoed" => %{"nested" => %{"ключ" => [%{"😀" => true}]}}}} =
             Snakepit.execute("echo", %{nested: %{ключ: [%{"😀": true}]}})
  end

  test "a map key that cannot be encoded is refused by path" do
    error = validation_error(%{outer: %{{1, 2} => 1}})
    assert error.message =~ "args.outer has a map key that is a tuple"
    assert error.details.path == "args.outer"

    error = validation_error(%{outer: %{(2 ** 64) => 1}})
    assert error.message =~ "args.outer has a map key that is an integer outside the 64-bit range"

    error = validation_error(%{<<0xFF>> => 1})
    assert error.message =~ "args has a map key that is not valid UTF-8"
  end

  test "keys equal as JSON are refused naming the path and both keys" do
    error = validation_error(%{:a => 1, "a" => 2})
    assert error.details.path == "args"
    assert error.message =~ ~s(args has keys :a and "a")

    error = validation_error(%{x: %{1 => :x, "1" => :y}})
    assert error.details.path == "args.x"
    assert error.message =~ ~s(args.x has keys 1 and "1")

    error = validation_error(%{x: [%{nil => 1, "nil" => 2}]})
    assert error.details.path == "args.x[0]"
    assert error.message =~ ~s(args.x[0] has keys nil and "nil")

    error = validation_error(%{x: %{:"1" => 1, 1 => 2, "b" => 3}})
    assert error.message =~ ~s(args.x has keys 1 and :"1")

    assert {:ok, %{"echoed" => %{"a" => 1, "b" => 2, "1" => 3}}} =
             Snakepit.execute("echo", %{:a => 1, "b" => 2, 1 => 3})
  end

  test "a map whose :__struct__ is not an atom is a plain map, not a hang" do
    for bad <- ["NotAModule", 42] do
      task =
        Task.async(fn ->
          Snakepit.execute("echo", %{value: %{__struct__: bad}}, timeout: 5_000)
        end)

      assert {:ok, {:ok, %{"echoed" => %{"value" => %{"__struct__" => ^bad}}}}} =
               Task.yield(task, 10_000),
             "execute did not return for __struct__: #{inspect(bad)}"
    end

    error = validation_error(%{__struct__: "x", d: ~D[2020-01-02], pid: self()})
    assert error.details.path == "args.pid"
  end

  test "a struct next to an improper list is refused by path, not raised" do
    error = validation_error(%{a_when: ~U[2020-01-02 03:04:05Z], bad: [1 | 2]})
    assert error.message =~ "args.bad is an improper list"
    assert error.details.path == "args.bad"

    error = validation_error(%{d: [~D[2020-01-02], [:a, :b | :c]]})
    assert error.details.path == "args.d[1]"

    # Without a struct the NIF names the same path.
    assert validation_error(%{bad: [1, 2 | 3]}).details.path == "args.bad"
  end

  test "invalid UTF-8 in a tool name or session_id is refused before sending" do
    assert {:error, %Snakepit.Error{category: :validation} = error} =
             Snakepit.execute(<<"echo", 0xFF>>, %{})

    assert error.message =~ "tool name is not valid UTF-8"

    assert {:error, %Snakepit.Error{category: :validation} = error} =
             Snakepit.execute("echo", %{}, session_id: <<"s", 0xC3>>)

    assert error.message =~ ~r/session_id (is not|must be) valid UTF-8/
    assert {:ok, %{"echoed" => %{}}} = Snakepit.execute("echo", %{}, session_id: "ok")
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
