defmodule Snakepit.Error.Parser do
  @moduledoc """
  Turns Python error data into structured Elixir errors.

  A message that describes a shape mismatch, an out-of-memory condition or
  tensors on different devices becomes `Snakepit.Error.ShapeMismatch`,
  `Snakepit.Error.OutOfMemory` or `Snakepit.Error.DeviceMismatch`; any other
  error becomes the exception struct of its Python type (see
  `Snakepit.Error.PythonException`).

      iex> {:ok, error} = Snakepit.Error.Parser.parse(%{"type" => "ValueError", "message" => "bad"})
      iex> error.__struct__
      Snakepit.Error.ValueError
  """

  alias Snakepit.Error.{Device, PythonException, Shape}

  @doc """
  Parses a map with `"type"`, `"message"` and optionally `"traceback"`.
  Returns `{:error, :invalid_input}` for anything else.
  """
  @spec parse(term()) :: {:ok, Exception.t()} | {:error, :invalid_input}
  def parse(%{"type" => type, "message" => message} = data)
      when is_binary(type) and is_binary(message) do
    error =
      cond do
        shape_mismatch?(message) -> parse_shape_mismatch(message)
        out_of_memory?(message) -> parse_out_of_memory(message)
        device_mismatch?(message) -> parse_device_mismatch(message)
        true -> PythonException.new(type, message, traceback: data["traceback"])
      end

    {:ok, error}
  end

  def parse(_data), do: {:error, :invalid_input}

  @doc """
  Parses a gRPC error `%{status: _, message: text}`: `text` is either the
  JSON error object Python workers send (`{"type", "message", "traceback"}`)
  or a line such as `"ValueError: expected positive value"`.
  """
  @spec from_grpc_error(term()) :: {:ok, Exception.t()} | {:error, :invalid_input}
  def from_grpc_error(%{status: _status, message: message}) when is_binary(message) do
    case decode_json_object(message) do
      {:ok, data} -> parse(data)
      :error -> parse_line(message)
    end
  end

  def from_grpc_error(_error), do: {:error, :invalid_input}

  @doc """
  Extracts a shape written as `[a, b, c]` or `(a, b, c)`; `nil` when there is none.

      iex> Snakepit.Error.Parser.extract_shape("[3, 224, 224]")
      [3, 224, 224]
      iex> Snakepit.Error.Parser.extract_shape("(10, 20)")
      [10, 20]
      iex> Snakepit.Error.Parser.extract_shape("[batch, 512]")
      nil
  """
  @spec extract_shape(String.t()) :: [integer()] | nil
  def extract_shape(text) when is_binary(text) do
    case Regex.run(~r/\[([0-9,\s]+)\]/, text) || Regex.run(~r/\(([0-9,\s]+)\)/, text) do
      [_, dims] ->
        dims
        |> String.split(",", trim: true)
        |> Enum.flat_map(fn dim ->
          case Integer.parse(String.trim(dim)) do
            {n, _} -> [n]
            :error -> []
          end
        end)

      nil ->
        nil
    end
  end

  defp parse_line(message) do
    case Regex.run(~r/^(\w+(?:Error|Exception)):\s*(.+)$/s, message) do
      [_, type, text] -> parse(%{"type" => type, "message" => text})
      nil -> {:ok, PythonException.new("Unknown", message)}
    end
  end

  defp shape_mismatch?(message) do
    String.contains?(String.downcase(message), "shape") and
      String.contains?(message, ["mismatch", "expected", "got"])
  end

  defp out_of_memory?(message) do
    lower = String.downcase(message)

    String.contains?(lower, ["out of memory", "oom"]) or
      (String.contains?(lower, "cuda") and String.contains?(lower, "allocate"))
  end

  defp device_mismatch?(message) do
    lower = String.downcase(message)
    String.contains?(lower, "device") and String.contains?(lower, ["mismatch", "expected"])
  end

  defp parse_shape_mismatch(message) do
    Shape.shape_mismatch(
      shape_after(message, "expected") || [],
      shape_after(message, "got") || [],
      operation(message)
    )
  end

  defp shape_after(message, word) do
    case Regex.run(~r/#{word}\s*:?\s*(\[[0-9,\s]+\]|\([0-9,\s]+\))/i, message) do
      [_, shape] -> extract_shape(shape)
      nil -> nil
    end
  end

  defp parse_out_of_memory(message) do
    Device.out_of_memory(
      first_device(message) || {:cuda, 0},
      memory_after(message, ~r/allocate\s+([\d.]+)\s*(GB|MB|GiB|MiB)/i),
      memory_after(message, ~r/(?:available|free)\s+([\d.]+)\s*(GB|MB|GiB|MiB)/i)
    )
  end

  defp memory_after(message, regex) do
    case Regex.run(regex, message) do
      [_, number, unit] ->
        {value, _} = Float.parse(number)
        factor = if String.upcase(unit) in ["GB", "GIB"], do: 1_073_741_824, else: 1_048_576
        trunc(value * factor)

      nil ->
        0
    end
  end

  defp parse_device_mismatch(message) do
    second =
      case Regex.run(~r/and\s+(cuda:\d+|cuda|cpu|mps)/i, message) do
        [_, device] -> device_from(device)
        nil -> nil
      end

    Device.device_mismatch(first_device(message) || :cpu, second || :cpu, operation(message))
  end

  defp first_device(message) do
    case Regex.run(~r/cuda:(\d+)|(cuda)|(mps)|(cpu)/i, message) do
      nil -> nil
      [device | _] -> device_from(device)
    end
  end

  defp device_from(text) do
    case String.downcase(text) do
      "cuda:" <> id -> {:cuda, String.to_integer(id)}
      "cuda" -> {:cuda, 0}
      "mps" -> :mps
      "cpu" -> :cpu
    end
  end

  defp operation(message) do
    case Regex.run(~r/(?:in|during|for)\s+(\w+)/i, message) do
      [_, operation] -> operation
      nil -> "unknown"
    end
  end

  # Only a flat JSON object of strings (what Python workers send) needs
  # decoding here; anything else is not an error payload.
  defp decode_json_object(text) do
    with "{" <> _ <- String.trim_leading(text),
         {:ok, pairs} <- json_pairs(String.trim(text)) do
      {:ok, Map.new(pairs)}
    else
      _ -> :error
    end
  end

  defp json_pairs("{" <> rest), do: json_members(skip_ws(rest), [])
  defp json_pairs(_), do: :error

  defp json_members("}" <> rest, acc), do: if(skip_ws(rest) == "", do: {:ok, acc}, else: :error)

  defp json_members(text, acc) do
    with {:ok, key, rest} <- json_string(text),
         ":" <> rest <- skip_ws(rest),
         {:ok, value, rest} <- json_value(skip_ws(rest)) do
      case skip_ws(rest) do
        "," <> rest -> json_members(skip_ws(rest), [{key, value} | acc])
        "}" <> _ = rest -> json_members(rest, [{key, value} | acc])
        _ -> :error
      end
    else
      _ -> :error
    end
  end

  defp json_value("\"" <> _ = text), do: json_string(text)
  defp json_value("null" <> rest), do: {:ok, nil, rest}
  defp json_value("true" <> rest), do: {:ok, true, rest}
  defp json_value("false" <> rest), do: {:ok, false, rest}

  defp json_value(text) do
    case Regex.run(~r/^-?\d+(\.\d+)?([eE][+-]?\d+)?/, text) do
      [number | _] ->
        {value, ""} =
          if String.contains?(number, [".", "e", "E"]),
            do: Float.parse(number),
            else: Integer.parse(number)

        {:ok, value, binary_part(text, byte_size(number), byte_size(text) - byte_size(number))}

      nil ->
        :error
    end
  end

  defp json_string("\"" <> rest), do: json_chars(rest, [])
  defp json_string(_), do: :error

  defp json_chars("\"" <> rest, acc), do: {:ok, IO.iodata_to_binary(Enum.reverse(acc)), rest}
  defp json_chars("\\n" <> rest, acc), do: json_chars(rest, ["\n" | acc])
  defp json_chars("\\t" <> rest, acc), do: json_chars(rest, ["\t" | acc])
  defp json_chars("\\r" <> rest, acc), do: json_chars(rest, ["\r" | acc])
  defp json_chars("\\b" <> rest, acc), do: json_chars(rest, ["\b" | acc])
  defp json_chars("\\f" <> rest, acc), do: json_chars(rest, ["\f" | acc])
  defp json_chars("\\/" <> rest, acc), do: json_chars(rest, ["/" | acc])
  defp json_chars("\\\\" <> rest, acc), do: json_chars(rest, ["\\" | acc])
  defp json_chars("\\\"" <> rest, acc), do: json_chars(rest, ["\"" | acc])

  # Python's json.dumps escapes non-ASCII, astral characters as surrogate pairs.
  defp json_chars(
         "\\u" <> <<hi::binary-size(4), "\\u", lo::binary-size(4), rest::binary>> = text,
         acc
       ) do
    with {high, ""} when high in 0xD800..0xDBFF <- Integer.parse(hi, 16),
         {low, ""} when low in 0xDC00..0xDFFF <- Integer.parse(lo, 16) do
      code = 0x10000 + Bitwise.bsl(high - 0xD800, 10) + (low - 0xDC00)
      json_chars(rest, [<<code::utf8>> | acc])
    else
      _ -> json_escape(text, acc)
    end
  end

  defp json_chars("\\u" <> _ = text, acc), do: json_escape(text, acc)

  defp json_chars(<<char::utf8, rest::binary>>, acc), do: json_chars(rest, [<<char::utf8>> | acc])
  defp json_chars(_, _acc), do: :error

  defp json_escape("\\u" <> <<hex::binary-size(4), rest::binary>>, acc) do
    case Integer.parse(hex, 16) do
      # A lone surrogate is not a character.
      {code, ""} when code in 0xD800..0xDFFF -> json_chars(rest, ["\uFFFD" | acc])
      {code, ""} -> json_chars(rest, [<<code::utf8>> | acc])
      _ -> :error
    end
  end

  defp json_escape(_text, _acc), do: :error

  defp skip_ws(<<c, rest::binary>>) when c in [?\s, ?\n, ?\t, ?\r], do: skip_ws(rest)
  defp skip_ws(text), do: text
end
