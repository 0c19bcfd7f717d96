defmodule Snakepit.Error.ShapeMismatch do
  @moduledoc """
  A tensor shape mismatch: `expected` and `got` shapes, or for a single
  dimension its index (`dimension`) with `expected_dim` and `got_dim`.
  Build it with `Snakepit.Error.Shape`.
  """

  @type t :: %__MODULE__{
          expected: [integer()] | nil,
          got: [integer()] | nil,
          dimension: non_neg_integer() | nil,
          expected_dim: integer() | nil,
          got_dim: integer() | nil,
          operation: String.t() | nil,
          message: String.t() | nil
        }

  defexception [:expected, :got, :dimension, :expected_dim, :got_dim, :operation, :message]

  @impl true
  @spec message(t()) :: String.t()
  def message(%__MODULE__{message: message}) when is_binary(message), do: message

  def message(%__MODULE__{dimension: nil} = error),
    do:
      "Shape mismatch in #{error.operation || "operation"}: expected #{inspect(error.expected)}, got #{inspect(error.got)}"

  def message(%__MODULE__{} = error),
    do:
      "Shape mismatch in #{error.operation || "operation"}: dimension #{error.dimension} expected #{inspect(error.expected)}, got #{inspect(error.got)}"
end

defmodule Snakepit.Error.Shape do
  @moduledoc """
  Builds `Snakepit.Error.ShapeMismatch` errors. Each one emits
  `[:snakepit, :error, :shape_mismatch]` (metadata `expected`, `got`,
  `dimension`, `operation`).

      iex> e = Snakepit.Error.Shape.shape_mismatch([3, 224, 224], [3, 256, 224], "conv2d")
      iex> {e.dimension, e.expected_dim, e.got_dim}
      {1, 224, 256}
  """

  alias Snakepit.Error.ShapeMismatch
  alias Snakepit.Telemetry

  @doc "Shapes `expected` and `got` differ; the first differing dimension is found when the ranks match."
  @spec shape_mismatch([integer()], [integer()], String.t()) :: ShapeMismatch.t()
  def shape_mismatch(expected, got, operation) when is_list(expected) and is_list(got) do
    {dimension, expected_dim, got_dim} = first_difference(expected, got)

    message =
      if length(expected) == length(got) do
        "Shape mismatch in #{operation}: expected #{inspect(expected)}, got #{inspect(got)}"
      else
        "Shape mismatch in #{operation}: rank mismatch - expected #{length(expected)} dimensions " <>
          "#{inspect(expected)}, got #{length(got)} dimensions #{inspect(got)}"
      end

    emit(%ShapeMismatch{
      expected: expected,
      got: got,
      dimension: dimension,
      expected_dim: expected_dim,
      got_dim: got_dim,
      operation: operation,
      message: message
    })
  end

  @doc "Dimension `dimension` should be `expected_dim` but is `got_dim`."
  @spec dimension_mismatch(non_neg_integer(), integer(), integer(), String.t()) ::
          ShapeMismatch.t()
  def dimension_mismatch(dimension, expected_dim, got_dim, operation) do
    emit(%ShapeMismatch{
      dimension: dimension,
      expected_dim: expected_dim,
      got_dim: got_dim,
      operation: operation,
      message:
        "Shape mismatch in #{operation}: dimension #{dimension} expected #{expected_dim}, got #{got_dim}"
    })
  end

  @doc "Two shapes cannot be broadcast together."
  @spec broadcast_error([integer()], [integer()], String.t()) :: ShapeMismatch.t()
  def broadcast_error(shape1, shape2, operation) do
    emit(%ShapeMismatch{
      expected: shape1,
      got: shape2,
      operation: operation,
      message: "Cannot broadcast shapes #{inspect(shape1)} and #{inspect(shape2)} in #{operation}"
    })
  end

  defp first_difference(expected, got) when length(expected) != length(got), do: {nil, nil, nil}

  defp first_difference(expected, got) do
    expected
    |> Enum.zip(got)
    |> Enum.with_index()
    |> Enum.find_value({nil, nil, nil}, fn
      {{same, same}, _index} -> nil
      {{e, g}, index} -> {index, e, g}
    end)
  end

  defp emit(error) do
    Telemetry.execute([:snakepit, :error, :shape_mismatch], %{}, %{
      expected: error.expected,
      got: error.got,
      dimension: error.dimension,
      operation: error.operation
    })

    error
  end
end
