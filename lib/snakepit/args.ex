defmodule Snakepit.Args do
  @moduledoc false
  # The slow path for terms the NIF does not encode itself: structs.
  # Calendar structs become ISO 8601 strings; any other struct is refused.
  # A struct is a map whose :__struct__ is an atom (what `%module{}` matches),
  # the same test the NIF applies, so what this returns never needs it again.

  @calendar [DateTime, NaiveDateTime, Date, Time]

  @doc """
  Converts the structs in `term` (arguments, or an Elixir tool's result);
  `root` starts the paths. An error has a message and the bad value's path.
  """
  @spec prepare(term(), String.t()) :: {:ok, term()} | {:error, String.t(), String.t()}
  def prepare(term, root \\ "args") do
    {:ok, convert(term, root)}
  catch
    {:unencodable, path, problem} ->
      path = IO.iodata_to_binary(path)
      {:error, "#{path} #{problem}", path}
  end

  # `path` is iodata, made into text only for an error.
  defp convert(%module{} = value, path) when module in @calendar do
    module.to_iso8601(value)
  rescue
    _ -> throw({:unencodable, path, "is a malformed #{inspect(module)} struct"})
  end

  defp convert(%module{}, path) do
    throw({:unencodable, path, "is a #{inspect(module)} struct, which cannot be sent to Python"})
  end

  defp convert(map, path) when is_map(map) do
    Map.new(map, fn {key, value} -> {key, convert(value, [path, ?. | key_text(key)])} end)
  end

  defp convert(list, path) when is_list(list), do: convert_list(list, path, 0, [])
  defp convert(other, _path), do: other

  defp convert_list([item | rest], path, index, acc) do
    convert_list(rest, path, index + 1, [
      convert(item, [path, ?[, Integer.to_string(index), ?]]) | acc
    ])
  end

  defp convert_list([], _path, _index, acc), do: Enum.reverse(acc)

  defp convert_list(_tail, path, _index, _acc),
    do: throw({:unencodable, path, "is an improper list"})

  defp key_text(key) when is_binary(key), do: key
  defp key_text(key) when is_atom(key), do: Atom.to_string(key)
  defp key_text(key), do: inspect(key)
end
