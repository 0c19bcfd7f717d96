defmodule Snakepit.Args do
  @moduledoc false
  # The slow path for arguments the NIF does not encode itself: structs.
  # Calendar structs become ISO 8601 strings; any other struct is refused.

  @spec prepare(term()) :: {:ok, term()} | {:error, String.t()}
  def prepare(args) do
    {:ok, convert(args, "args")}
  catch
    {:unencodable, message} -> {:error, message}
  end

  defp convert(%DateTime{} = value, _path), do: DateTime.to_iso8601(value)
  defp convert(%NaiveDateTime{} = value, _path), do: NaiveDateTime.to_iso8601(value)
  defp convert(%Date{} = value, _path), do: Date.to_iso8601(value)
  defp convert(%Time{} = value, _path), do: Time.to_iso8601(value)

  defp convert(%module{}, path) do
    throw(
      {:unencodable, "#{path} is a #{inspect(module)} struct, which cannot be sent to Python"}
    )
  end

  defp convert(map, path) when is_map(map) do
    Map.new(map, fn {key, value} -> {key, convert(value, "#{path}.#{key_text(key)}")} end)
  end

  defp convert(list, path) when is_list(list) do
    list |> Enum.with_index() |> Enum.map(fn {item, i} -> convert(item, "#{path}[#{i}]") end)
  end

  defp convert(other, _path), do: other

  defp key_text(key) when is_binary(key), do: key
  defp key_text(key) when is_atom(key), do: Atom.to_string(key)
  defp key_text(key), do: inspect(key)
end
