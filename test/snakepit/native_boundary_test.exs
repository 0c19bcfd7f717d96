defmodule Snakepit.NativeBoundaryTest do
  use ExUnit.Case, async: true

  alias Snakepit.Native

  test "a NIF that throws returns an error value; the VM lives on" do
    assert Native.boundary_check(:ok) == :ok

    assert {:error, {:pool, :native_exception, "native code failed: out of memory", %{}}} =
             Native.boundary_check(:bad_alloc)

    assert {:error, {:pool, :native_exception, "native code failed: thrown on purpose", %{}}} =
             Native.boundary_check(:runtime_error)
  end

  test "a bad argument raises an ArgumentError naming it" do
    assert_raise ArgumentError,
                 ~r/^argument 1: expected :bad_alloc, :runtime_error or :bad_arg$/,
                 fn ->
                   Native.boundary_check(:bad_arg)
                 end

    assert_raise ArgumentError, "argument 1: expected a pool", fn -> Native.stats(:not_a_pool) end

    assert_raise ArgumentError, "argument 2: expected {:ok | :error | :not_found, term}", fn ->
      Native.elixir_tool_reply(1, :not_a_tuple)
    end
  end
end
