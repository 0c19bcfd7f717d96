defmodule Snakepit.PythonErrorsTest do
  use Snakepit.PoolCase, async: false

  alias Snakepit.Error

  setup_all do
    %{pool: start_pool!(name: :python_errors, pool_size: 1)}
  end

  defp raise_in_python(pool, type, message \\ "boom") do
    Snakepit.execute("raise_error", %{message: message, error_type: type}, pool_name: pool)
  end

  test "each mapped Python exception type comes back as its struct", %{pool: pool} do
    for {type, module} <- Error.PythonException.mapping() do
      assert {:error, %^module{} = error} = raise_in_python(pool, type, "from #{type}")
      assert error.python_type == type
      assert error.message =~ "from #{type}"
      assert error.category == :python_error
      assert error.details.python_type == type
      assert error.details.command == "raise_error"
      assert error.details.pool_name == pool
      assert error.context.command == "raise_error"
      assert error.python_traceback =~ "Traceback"
      assert error.python_traceback =~ type
      assert Enum.any?(error.stacktrace, &(&1 =~ "raise_error"))
    end
  end

  test "an unmapped type is a PythonException carrying its type", %{pool: pool} do
    assert {:error, %Error.PythonException{python_type: "LookupError"} = error} =
             raise_in_python(pool, "LookupError", "not here")

    assert error.message == "not here"
    assert %{category: :python_error, details: %{python_type: "LookupError"}} = error

    # A subclass of a mapped type is still its own type.
    assert {:error, %Error.PythonException{python_type: "UnicodeError"}} =
             raise_in_python(pool, "UnicodeError")
  end

  test "a mismatched type is neither mapped struct nor %Snakepit.Error{}", %{pool: pool} do
    assert {:error, error} = raise_in_python(pool, "KeyError", "k")
    refute match?(%Error{}, error)
    refute match?(%Error.ValueError{}, error)
  end

  test "\#{error} renders category, message, details and traceback", %{pool: pool} do
    {:error, error} = raise_in_python(pool, "ZeroDivisionError", "division by zero")
    text = "#{error}"
    assert text =~ ~r/^\[python_error\] ZeroDivisionError: division by zero\nDetails: %\{/
    assert text =~ "command: \"raise_error\""
    assert text =~ "\n\nPython Traceback:\nTraceback (most recent call last):"
    assert Exception.message(error) == "division by zero"

    assert_raise Error.ZeroDivisionError, "division by zero", fn -> raise error end
  end

  test "other failures stay %Snakepit.Error{} and render too", %{pool: pool} do
    assert {:error, %Error{category: :python_error, details: %{reason: :tool_not_found}} = e} =
             Snakepit.execute("no_such_tool", %{}, pool_name: pool)

    assert "#{e}" =~ ~r/^\[python_error\] .*no_such_tool/

    assert {:error, %Error{category: :timeout} = timeout} =
             Snakepit.execute("sleep", %{ms: 2_000}, pool_name: pool, timeout: 100)

    assert "#{timeout}" =~ ~r/^\[timeout\] .*100 ms\nDetails: %\{.*reason: :worker_timeout/
  end

  test "translations are reported as mapped or unmapped", %{pool: pool} do
    :telemetry.attach_recorder()
    on_exit(fn -> :telemetry.detach_recorder() end)

    raise_in_python(pool, "IndexError")

    assert_receive {:telemetry_event, [:snakepit, :python, :exception, :mapped], %{},
                    %{python_type: "IndexError", function: "raise_error"}}

    raise_in_python(pool, "OSError")

    assert_receive {:telemetry_event, [:snakepit, :python, :exception, :unmapped], %{},
                    %{python_type: "OSError"}}
  end

  describe "constructors and String.Chars" do
    test "the six constructors" do
      assert %Error{category: :worker, details: %{worker_id: "w1"}} =
               Error.worker_error("Worker not found", %{worker_id: "w1"})

      assert %Error{category: :timeout} = Error.timeout_error("late")
      assert %Error{category: :pool} = Error.pool_error("full")
      assert %Error{category: :validation} = Error.validation_error("bad")

      assert %Error{category: :grpc_error, grpc_status: :unavailable} =
               Error.grpc_error(:unavailable, "down")

      error = Error.python_error("KeyError", "'x'", "Traceback...", %{function: "f"})
      assert error.message == "KeyError: 'x'"
      assert error.details == %{function: "f", exception_type: "KeyError"}
      # The type is not repeated.
      assert Exception.message(error) == "KeyError: 'x'"
    end

    test "to_string shows only the parts an error has" do
      assert to_string(Error.worker_error("Worker crashed")) == "[worker] Worker crashed"

      assert to_string(Error.grpc_error(:unavailable, "down", %{worker_id: "w"})) ==
               "[grpc_error] down\nDetails: %{worker_id: \"w\"}\ngRPC Status: unavailable"

      assert "#{Error.python_error("ValueError", "bad", "Traceback (x)")}" ==
               "[python_error] ValueError: bad\nDetails: %{exception_type: \"ValueError\"}" <>
                 "\n\nPython Traceback:\nTraceback (x)"
    end
  end
end
