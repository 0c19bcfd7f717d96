defmodule Snakepit.Serialization do
  @moduledoc """
  Markers for Python values that could not be serialized.

  A tool's result is converted to JSON in the worker. Objects with
  `model_dump`, `to_dict`, `_asdict`, `tolist` or `isoformat` are converted
  through them; anything else that JSON cannot hold is replaced by a marker
  map instead of failing the call:

      %{"__ffi_unserializable__" => true, "__type__" => "module.ClassName"}

  (`"__repr__"` is added only when the worker's
  `SNAKEPIT_UNSERIALIZABLE_DETAIL` asks for it.) This module recognises
  those markers.
  """

  @marker "__ffi_unserializable__"

  @doc """
  Whether `value` is an unserializable marker.

      iex> Snakepit.Serialization.unserializable?(%{"__ffi_unserializable__" => true, "__type__" => "socket.socket"})
      true
      iex> Snakepit.Serialization.unserializable?(%{"key" => "value"})
      false
      iex> Snakepit.Serialization.unserializable?(nil)
      false
  """
  @spec unserializable?(term()) :: boolean()
  def unserializable?(%{@marker => true}), do: true
  def unserializable?(_value), do: false

  @doc """
  The type (and repr, when present) of a marker; `:error` for anything else.

      iex> Snakepit.Serialization.unserializable_info(%{"__ffi_unserializable__" => true, "__type__" => "datetime.tzinfo"})
      {:ok, %{type: "datetime.tzinfo", repr: nil}}
      iex> Snakepit.Serialization.unserializable_info(%{"key" => "value"})
      :error
  """
  @spec unserializable_info(term()) ::
          {:ok, %{type: String.t() | nil, repr: String.t() | nil}} | :error
  def unserializable_info(%{@marker => true} = marker),
    do: {:ok, %{type: Map.get(marker, "__type__"), repr: Map.get(marker, "__repr__")}}

  def unserializable_info(_value), do: :error
end
