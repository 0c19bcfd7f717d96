defmodule Snakepit.RandomTerms do
  @moduledoc """
  Random argument maps for the encoder test, and what each should give.

  `args/0` draws from `:rand`'s process state (seed it first). `expect/1`
  is the contract, written independently of the encoder: `{:ok, value}`
  with what the built-in `echo` tool returns for a valid map (keys as
  strings, atoms as strings except `nil`/`true`/`false`, calendar structs
  as ISO 8601 text, everything else as is), or `{:invalid, paths}` with
  every path a `:validation` error may name (the encoder stops at the first
  problem it meets, in map order, so any of them is right).
  """

  @int64_min -9_223_372_036_854_775_808
  @uint64_max 2 ** 64 - 1
  # The NIF refuses a term nested past this many levels below an argument.
  @max_depth 256
  @calendar [DateTime, NaiveDateTime, Date, Time]
  # Few, overlapping names so that keys equal as JSON meet often:
  # "a" and :a, "1" and 1 and :"1", "nil" and nil.
  @key_texts ["a", "b", "1", "-7", "nil", "true", "false", "", "日本", "😀", "a b", "x\0y", "ÿ"]

  defmodule Point do
    @moduledoc "An arbitrary struct, which cannot be sent."
    defstruct [:x, :y]
  end

  @doc "A random argument map (now and then a struct or an oversized term)."
  @spec args() :: term()
  def args do
    case roll(60) do
      1 -> struct_value(true)
      _ -> map(4, true)
    end
  end

  @doc "What `Snakepit.execute(\"echo\", args)` must return for `args` (see the moduledoc)."
  @spec expect(term()) :: {:ok, map()} | {:invalid, [String.t()]}
  def expect(args) do
    {value, invalid} = if struct?(args), do: {nil, ["args"]}, else: expect_map(args, "args", -1)

    if invalid == [], do: {:ok, value}, else: {:invalid, Enum.uniq(invalid)}
  end

  # ---------------------------------------------------------------- oracle

  defp expect_term(term, path, depth) do
    {value, invalid} = expect_value(term, path, depth)
    if depth == @max_depth + 1, do: {value, [path | invalid]}, else: {value, invalid}
  end

  defp expect_value(atom, _path, _depth) when atom in [nil, true, false], do: {atom, []}
  defp expect_value(atom, _path, _depth) when is_atom(atom), do: {Atom.to_string(atom), []}

  defp expect_value(binary, path, _depth) when is_binary(binary) do
    if String.valid?(binary), do: {binary, []}, else: {nil, [path]}
  end

  defp expect_value(integer, path, _depth) when is_integer(integer) do
    if integer in @int64_min..@uint64_max, do: {integer, []}, else: {nil, [path]}
  end

  defp expect_value(float, _path, _depth) when is_float(float), do: {float, []}

  defp expect_value(list, path, depth) when is_list(list),
    do: expect_list(list, path, depth, 0, [], [])

  defp expect_value(%module{} = struct, path, _depth) when module in @calendar do
    {module.to_iso8601(struct), []}
  rescue
    _ -> {nil, [path]}
  end

  defp expect_value(map, path, depth) when is_map(map) do
    if struct?(map), do: {nil, [path]}, else: expect_map(map, path, depth)
  end

  # Pids, references, ports, functions, tuples, bitstrings.
  defp expect_value(_other, path, _depth), do: {nil, [path]}

  defp expect_list([item | rest], path, depth, index, values, invalid) do
    {value, more} = expect_term(item, "#{path}[#{index}]", depth + 1)
    expect_list(rest, path, depth, index + 1, [value | values], more ++ invalid)
  end

  defp expect_list([], _path, _depth, _index, values, invalid),
    do: {Enum.reverse(values), invalid}

  defp expect_list(_tail, path, _depth, _index, _values, invalid), do: {nil, [path | invalid]}

  # Values are looked into even under a bad key: the Elixir side converts
  # structs before the NIF reads keys, and may name a path below it.
  defp expect_map(map, path, depth) do
    entries =
      Enum.map(map, fn {key, value} ->
        {text, value_invalid} = expect_term(value, path <> "." <> path_segment(key), depth + 1)
        {key_text(key), text, value_invalid}
      end)

    texts = Enum.map(entries, &elem(&1, 0))
    bad_keys? = :error in texts or length(Enum.uniq(texts)) < length(texts)
    invalid = Enum.flat_map(entries, &elem(&1, 2))

    value =
      Map.new(entries, fn
        {{:ok, text}, value, _} -> {text, value}
        _ -> {nil, nil}
      end)

    {value, if(bad_keys?, do: [path | invalid], else: invalid)}
  end

  defp key_text(key) when is_binary(key), do: if(String.valid?(key), do: {:ok, key}, else: :error)
  defp key_text(key) when is_atom(key), do: {:ok, Atom.to_string(key)}

  defp key_text(key) when is_integer(key) and key in @int64_min..@uint64_max,
    do: {:ok, Integer.to_string(key)}

  defp key_text(_key), do: :error

  # How Snakepit.Args names a key in a path.
  defp path_segment(key) when is_binary(key), do: key
  defp path_segment(key) when is_atom(key), do: Atom.to_string(key)
  defp path_segment(key), do: inspect(key)

  defp struct?(map), do: is_map(map) and is_atom(Map.get(map, :__struct__, "none"))

  # ------------------------------------------------------------- generator

  defp roll(n), do: :rand.uniform(n)
  defp pick(list), do: Enum.at(list, :rand.uniform(length(list)) - 1)

  defp map(size, top?) do
    count = if size <= 0, do: roll(3) - 1, else: roll(min(size * 2 + 2, 10)) - 1

    Enum.reduce(1..count//1, %{}, fn _, acc ->
      Map.put(acc, key(top?), value(size - 1, top?))
    end)
  end

  # `top?`: an argument name, where "self" is not allowed (echo is a method).
  defp key(top?) do
    key =
      case roll(100) do
        n when n <= 35 -> pick(@key_texts)
        n when n <= 50 -> pick(@key_texts) |> String.to_atom()
        n when n <= 58 -> pick([nil, true, false, :"1", :ok, String.to_atom(long_atom_text())])
        n when n <= 68 -> pick([1, -7, 0, @int64_min, @uint64_max, 2 ** 63])
        98 -> pick([2 ** 64, @int64_min - 1])
        99 -> pick([<<0xFF>>, <<"a", 0xC3>>])
        100 -> pick([1.5, {1, 2}, [1], %{}, self(), <<1::3>>])
        _ -> string()
      end

    if top? and key in ["self", :self], do: "not_self", else: key
  end

  defp value(size, top?) do
    case roll(100) do
      n when n <= 55 or size <= 0 ->
        leaf(top?)

      n when n <= 70 ->
        Enum.map(1..(roll(5) - 1)//1, fn _ -> value(size - 1, false) end)

      n when n <= 85 ->
        map(size, false)

      n when n <= 94 ->
        struct_value(false)

      n when n <= 96 ->
        deep(value(0, false))

      97 ->
        improper()

      _ ->
        pick([[], %{}, [[]], [%{}]])
    end
  end

  # A leaf: mostly valid, now and then something no JSON can hold.
  # A top-level binary that is not UTF-8 is sent as bytes, which echo
  # cannot put back into a dict, so it is generated below the top only.
  defp leaf(top?) do
    case roll(200) do
      n when n <= 50 ->
        integer()

      n when n <= 80 ->
        float()

      n when n <= 130 ->
        string()

      n when n <= 155 ->
        pick([nil, true, false, :ok, :日本, :"", :"1", String.to_atom(long_atom_text())])

      n when n <= 170 ->
        pick(@key_texts)

      n when n <= 175 and not top? ->
        invalid_utf8()

      176 ->
        pick([2 ** 64, @int64_min - 1, 2 ** 200, -(2 ** 100)])

      177 ->
        pick([self(), make_ref(), hd(Port.list()), fn -> :ok end, {1, 2}, {}, <<1::3>>])

      178 ->
        big_string()

      _ ->
        integer()
    end
  end

  defp integer do
    case roll(4) do
      1 ->
        pick([0, -1, @int64_min, 2 ** 63 - 1, 2 ** 63, @uint64_max, 2 ** 53 + 1, -(2 ** 53) - 1])

      2 ->
        :rand.uniform(2 ** 64) - 1 + @int64_min

      _ ->
        roll(2001) - 1001
    end
  end

  defp float do
    case roll(3) do
      1 ->
        pick([
          0.0,
          -0.0,
          1.0,
          -1.5,
          0.1,
          5.0e-324,
          2.2250738585072014e-308,
          1.7976931348623157e308,
          1.0e16
        ])

      2 ->
        :rand.uniform() * :math.pow(10, roll(600) - 300) * pick([1, -1])

      _ ->
        (roll(2_000_001) - 1_000_001) / 1000
    end
  end

  # Valid UTF-8, NUL and escapes included.
  defp string do
    1..(roll(12) - 1)//1
    |> Enum.map(fn _ ->
      pick([
        ?a,
        ?Z,
        ?0,
        ?\s,
        0,
        ?",
        ?\\,
        ?\n,
        0x1F,
        0x7F,
        0xE9,
        0xFF,
        0x65E5,
        0x1F600,
        0xFFFD,
        0x10FFFF
      ])
    end)
    |> List.to_string()
  end

  defp long_atom_text, do: String.duplicate("日", 255)

  defp invalid_utf8 do
    pick([
      <<0xFF>>,
      <<"ok", 0xC3>>,
      <<0xC0, 0x80>>,
      <<0xED, 0xA0, 0x80>>,
      <<0xF4, 0x90, 0x80, 0x80>>,
      <<"a", 0x80, "b">>
    ])
  end

  # Past the scheduler's encode budget, so the call moves to a dirty scheduler.
  defp big_string, do: String.duplicate("é", 40_000 + roll(40_000))

  defp improper do
    pick([[1 | 2], [:a, "b" | :c], [[] | <<>>], [%{} | %{}]])
  end

  # Around the depth limit: lists and one-key maps, alternating.
  defp deep(leaf) do
    levels = @max_depth - 6 + roll(12)

    Enum.reduce(1..levels, leaf, fn level, inner ->
      if rem(level, 2) == 0, do: [inner], else: %{"d" => inner}
    end)
  end

  # `top?`: the struct is the whole argument map (a plain one if :__struct__
  # is no atom).
  defp struct_value(top?) do
    case roll(14) do
      1 ->
        DateTime.from_unix!(:rand.uniform(2 ** 40) - 2 ** 39, :microsecond)

      2 ->
        ~U[2026-11-26 10:20:30Z]

      3 ->
        paris_datetime()

      4 ->
        NaiveDateTime.add(~N[2000-01-01 00:00:00.000], roll(10 ** 9), :millisecond)

      5 ->
        Date.add(~D[2000-01-01], roll(100_000) - 50_000)

      6 ->
        pick([~T[23:59:59.999999], ~T[00:00:00]])

      7 ->
        pick([1..3, URI.parse("https://example.com/x"), MapSet.new([1]), Version.parse!("1.2.3")])

      8 ->
        %Point{x: 1, y: 2}

      9 ->
        %{__struct__: :no_such_module, a: 1}

      10 ->
        pick([%{__struct__: DateTime}, %{__struct__: Date, year: "x"}])

      11 ->
        %{__struct__: pick(["NotAModule", 42, nil])}

      _ ->
        %{__struct__: pick(["NotAModule", 42]), a: value(1, top?)}
    end
  end

  # A zoned DateTime built by hand (no time zone database needed).
  defp paris_datetime do
    %DateTime{
      year: 2026,
      month: 7,
      day: 1,
      hour: 12,
      minute: 0,
      second: 0,
      microsecond: {0, 0},
      time_zone: "Europe/Paris",
      zone_abbr: "CEST",
      utc_offset: 3600,
      std_offset: 3600
    }
  end
end
