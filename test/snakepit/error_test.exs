defmodule Snakepit.ErrorTest do
  use ExUnit.Case, async: true

  alias Snakepit.Error

  doctest Snakepit.Error

  describe "new/4" do
    test "builds the struct with reason, command and pool name in details" do
      error = Error.new(:pool, :pool_saturated, "queue full", command: "ping", pool_name: :ml)

      assert %Error{
               category: :pool,
               message: "queue full",
               details: %{reason: :pool_saturated, command: "ping", pool_name: :ml},
               python_traceback: nil,
               grpc_status: nil
             } = error

      assert map_size(error.details) == 3
    end

    test "leaves out unknown command and pool name" do
      assert Error.new(:worker, :worker_exit, "died").details == %{reason: :worker_exit}
    end

    test "stores python type, traceback and grpc status" do
      error =
        Error.new(:python_error, :python_exception, "bad input",
          python_type: "ValueError",
          python_traceback: "Traceback ...",
          grpc_status: 2
        )

      assert error.details.python_type == "ValueError"
      assert error.python_traceback == "Traceback ..."
      assert error.grpc_status == 2
    end

    test "merges extra details without overriding the reason" do
      error =
        Error.new(:validation, :not_encodable, "bad arg",
          details: %{reason: :other, key: "when"},
          command: "echo"
        )

      assert error.details == %{reason: :not_encodable, key: "when", command: "echo"}
    end

    test "derives a message from the reason when none is given" do
      assert Error.new(:timeout, :queue_timeout, nil).message == "queue timeout"
      assert Error.new(:timeout, :queue_timeout, "").message == "queue timeout"
    end

    test "rejects an unknown category" do
      assert_raise FunctionClauseError, fn -> Error.new(:bogus, :x, "m") end
    end
  end

  describe "message/1" do
    test "prefixes the python type for python errors" do
      error = Error.new(:python_error, :python_exception, "bad input", python_type: "ValueError")
      assert Exception.message(error) == "ValueError: bad input"
      assert_raise Error, "ValueError: bad input", fn -> raise error end
    end

    test "does not repeat a type already in the message" do
      error =
        Error.new(:python_error, :python_exception, "KeyError: 'x'", python_type: "KeyError")

      assert Exception.message(error) == "KeyError: 'x'"
    end

    test "returns the plain message for other categories" do
      assert Exception.message(Error.new(:pool, :pool_not_found, "no pool :x")) == "no pool :x"
    end

    test "python errors without a type return the plain message" do
      assert Exception.message(Error.new(:python_error, :python_exception, "boom")) == "boom"
    end
  end

  describe "from_native/2" do
    test "converts a python error with string keys into its exception struct" do
      native =
        {:python_error, :python_exception, "bad input",
         %{"python_type" => "ValueError", "traceback" => "Traceback ...", "worker_id" => "w1"}}

      error = Error.from_native(native, command: "predict", pool_name: :ml)

      assert %Snakepit.Error.ValueError{category: :python_error} = error
      assert error.message == "bad input"
      assert error.python_type == "ValueError"
      assert error.python_traceback == "Traceback ..."
      assert error.grpc_status == nil
      assert error.context == %{command: "predict", pool_name: :ml, worker_id: "w1"}

      assert error.details == %{
               reason: :python_exception,
               python_type: "ValueError",
               worker_id: "w1",
               command: "predict",
               pool_name: :ml
             }

      assert Exception.message(error) == "bad input"
    end

    test "converts a grpc error with atom keys" do
      native =
        {:grpc_error, :unavailable, "connection refused", %{grpc_status: 14, path: "/x.Y/Z"}}

      error = Error.from_native(native, command: "ping")

      assert error.category == :grpc_error
      assert error.grpc_status == 14
      assert error.details == %{reason: :unavailable, path: "/x.Y/Z", command: "ping"}
    end

    test "parses a numeric grpc_status string" do
      assert Error.from_native({:grpc_error, :deadline, "late", %{"grpc_status" => "4"}}).grpc_status ==
               4
    end

    test "uses the fixed category of known reasons" do
      assert Error.from_native({:worker, :queue_timeout, "waited", %{}}).category == :timeout
      assert Error.from_native({:worker, :pool_saturated, "full", %{}}).category == :pool
    end

    test "maps an unknown category to :worker" do
      assert Error.from_native({:weird, :crashed, "gone", %{}}).category == :worker
    end

    test "accepts a tuple without extra data and defaults the message" do
      error = Error.from_native({:worker, :worker_exit, nil}, pool_name: :default)
      assert error.message == "worker exit"
      assert error.details == %{reason: :worker_exit, pool_name: :default}
    end

    test "caller options win over native extra data" do
      native = {:python_error, :python_exception, "m", %{"python_type" => "TypeError"}}
      error = Error.from_native(native, python_type: "RuntimeError", details: %{attempt: 2})
      assert %Snakepit.Error.RuntimeError{} = error

      assert error.details == %{
               reason: :python_exception,
               python_type: "RuntimeError",
               attempt: 2
             }
    end
  end

  describe "category_for_reason/1" do
    test "timeouts" do
      for reason <- [:queue_timeout, :worker_timeout] do
        assert Error.category_for_reason(reason) == :timeout
      end
    end

    test "pool reasons" do
      for reason <- [
            :pool_not_found,
            :pool_not_initialized,
            :pool_saturated,
            :worker_busy,
            :session_worker_unavailable,
            :no_workers_available
          ] do
        assert Error.category_for_reason(reason) == :pool
      end
    end

    test "other reasons have no fixed category" do
      assert Error.category_for_reason(:python_exception) == nil
    end
  end
end
