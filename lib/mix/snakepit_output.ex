defmodule Snakepit.MixOutput do
  @moduledoc false
  # Output shared by the snakepit.* Mix tasks: check lines and JSON (no JSON
  # library is a dependency).

  @doc false
  @spec print_check(map()) :: :ok
  def print_check(%{status: status, label: label, message: message} = check) do
    tag = %{ok: "ok  ", warning: "warn", error: "FAIL"} |> Map.fetch!(status)
    line = "#{tag}  #{String.pad_trailing(label, 14)} #{message}"
    if status == :error, do: Mix.shell().error(line), else: Mix.shell().info(line)

    case check do
      %{status: :error, details: %{traceback: traceback}} when is_binary(traceback) ->
        traceback
        |> String.trim_trailing()
        |> String.split("\n")
        |> Enum.each(&Mix.shell().error("        " <> &1))

      _ ->
        :ok
    end
  end

  @doc false
  @spec line(:ok | :warning | :error, String.t(), String.t()) :: :ok
  def line(status, label, message),
    do: print_check(%{status: status, label: label, message: message})

  @doc false
  # Runs `fun` with its standard output captured; on a raise the captured
  # text goes to stderr first, so compiler output never mixes with JSON.
  @spec quietly((() -> term())) :: term()
  def quietly(fun) do
    {:ok, io} = StringIO.open("")
    leader = Process.group_leader()
    Process.group_leader(self(), io)

    try do
      fun.()
    rescue
      error ->
        Process.group_leader(self(), leader)
        {_, captured} = StringIO.contents(io)
        IO.write(:stderr, captured)
        reraise error, __STACKTRACE__
    after
      Process.group_leader(self(), leader)
      StringIO.close(io)
    end
  end

  @doc false
  @spec json(term()) :: String.t()
  def json(term), do: term |> encode() |> IO.iodata_to_binary()

  defp encode(nil), do: "null"
  defp encode(true), do: "true"
  defp encode(false), do: "false"
  defp encode(atom) when is_atom(atom), do: atom |> Atom.to_string() |> encode()
  defp encode(int) when is_integer(int), do: Integer.to_string(int)
  defp encode(float) when is_float(float), do: Float.to_string(float)
  defp encode(tuple) when is_tuple(tuple), do: tuple |> Tuple.to_list() |> encode()

  defp encode(text) when is_binary(text) do
    text = if String.valid?(text), do: text, else: :unicode.characters_to_binary(text, :latin1)
    [?", escape(text), ?"]
  end

  defp encode(list) when is_list(list),
    do: [?[, list |> Enum.map(&encode/1) |> Enum.intersperse(?,), ?]]

  defp encode(map) when is_map(map) do
    pairs = for {key, value} <- map, do: [encode(to_string(key)), ?:, encode(value)]
    [?{, Enum.intersperse(pairs, ?,), ?}]
  end

  defp escape(text) do
    for <<char::utf8 <- text>>, into: "" do
      case char do
        ?" -> "\\\""
        ?\\ -> "\\\\"
        ?\n -> "\\n"
        ?\r -> "\\r"
        ?\t -> "\\t"
        c when c < 0x20 -> "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
        c -> <<c::utf8>>
      end
    end
  end
end
