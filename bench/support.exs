defmodule Bench.Support do
  @moduledoc false
  # Helpers for bench/run.exs: load generation, /proc readings, the direct
  # client, pool start/stop, tables and JSON. Nothing here is library code.

  # ------------------------------------------------------------------ load

  @doc """
  Runs `fun.(caller_index)` in `concurrency` processes, each one call at a
  time, for `warmup_ms` and then a measured window of `duration_ms`. Only
  calls that complete inside the window count; a call's latency runs from
  its issue to its reply. `sampler` is called at both edges of the window
  (by this process) and the two samples are returned.
  """
  def load(concurrency, warmup_ms, duration_ms, fun, sampler \\ fn -> nil end) do
    start = System.monotonic_time()
    window_start = start + ms_to_native(warmup_ms)
    window_end = window_start + ms_to_native(duration_ms)
    parent = self()
    tag = make_ref()

    pids =
      for index <- 1..concurrency do
        spawn_link(fn ->
          send(parent, {tag, self(), caller(fun, index, window_start, window_end, 0, 0, [])})
        end)
      end

    sleep_until(window_start)
    first = sampler.()
    sleep_until(window_end)
    last = sampler.()

    results =
      for pid <- pids do
        receive do
          {^tag, ^pid, result} -> result
        end
      end

    calls = results |> Enum.map(&elem(&1, 0)) |> Enum.sum()
    errors = results |> Enum.map(&elem(&1, 1)) |> Enum.sum()

    latencies =
      results
      |> Enum.flat_map(&elem(&1, 2))
      |> Enum.map(&System.convert_time_unit(&1, :native, :nanosecond))
      |> Enum.sort()

    seconds = duration_ms / 1000

    %{
      calls: calls,
      errors: errors,
      seconds: seconds,
      calls_per_s: calls / seconds,
      p50_us: percentile(latencies, 0.50) / 1000,
      p99_us: percentile(latencies, 0.99) / 1000,
      mean_us: mean(latencies) / 1000,
      samples: {first, last}
    }
  end

  defp caller(fun, index, window_start, window_end, ok, errors, latencies) do
    issued = System.monotonic_time()
    result = fun.(index)
    done = System.monotonic_time()

    cond do
      done >= window_end ->
        {ok, errors, latencies}

      done < window_start ->
        caller(fun, index, window_start, window_end, ok, errors, latencies)

      match?({:ok, _}, result) ->
        caller(fun, index, window_start, window_end, ok + 1, errors, [done - issued | latencies])

      true ->
        if errors == 0, do: IO.puts(:stderr, "  call failed: #{inspect(result, limit: 8)}")
        caller(fun, index, window_start, window_end, ok, errors + 1, [done - issued | latencies])
    end
  end

  # Nearest rank: the smallest sample with at least p of the samples <= it.
  def percentile([], _p), do: 0

  def percentile(sorted, p) do
    rank = max(ceil(p * length(sorted)), 1)
    Enum.at(sorted, rank - 1)
  end

  defp mean([]), do: 0
  defp mean(list), do: Enum.sum(list) / length(list)

  defp ms_to_native(ms), do: System.convert_time_unit(round(ms * 1000), :microsecond, :native)

  defp sleep_until(deadline) do
    remaining =
      System.convert_time_unit(deadline - System.monotonic_time(), :native, :millisecond)

    if remaining > 0, do: Process.sleep(remaining)
    # The last few hundred microseconds, so the samples sit on the edges.
    spin_until(deadline)
  end

  defp spin_until(deadline) do
    if System.monotonic_time() < deadline, do: spin_until(deadline)
  end

  # ------------------------------------------------------------- /proc

  def clock_ticks do
    case :persistent_term.get({__MODULE__, :clk_tck}, nil) do
      nil ->
        ticks =
          case System.cmd("getconf", ["CLK_TCK"], stderr_to_stdout: true) do
            {text, 0} -> text |> String.trim() |> String.to_integer()
            _ -> 100
          end

        :persistent_term.put({__MODULE__, :clk_tck}, ticks)
        ticks

      ticks ->
        ticks
    end
  end

  def process_cpu_us(:self), do: process_cpu_us("self")

  def process_cpu_us(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, text} -> cpu_from_stat(text)
      {:error, _} -> 0
    end
  end

  # "pid (comm) state ...": comm may hold ") ", so split at the last one.
  # After it, field 3 (state) comes first: utime is field 14, stime 15.
  defp cpu_from_stat(text) do
    fields = stat_fields(text)
    utime = fields |> Enum.at(11) |> String.to_integer()
    stime = fields |> Enum.at(12) |> String.to_integer()
    (utime + stime) * 1_000_000 / clock_ticks()
  end

  # The fields after the command name (field 3 on).
  defp stat_fields(text) do
    {index, _} = :binary.matches(text, ") ") |> List.last()
    text |> binary_part(index + 2, byte_size(text) - index - 2) |> String.split(" ")
  end

  # A thread's start time (clock ticks after boot): thread ids wrap at
  # pid_max, start times do not.
  defp started_at(stat), do: stat |> stat_fields() |> Enum.at(19) |> String.to_integer()

  def processes_cpu_us(pids), do: pids |> Enum.map(&process_cpu_us/1) |> Enum.sum()

  @doc "Busy time of all cores (µs) from /proc/stat."
  def machine_busy_us do
    ["cpu" | fields] = File.read!("/proc/stat") |> String.split("\n") |> hd() |> String.split()

    [user, nice, system, _idle, _iowait, irq, softirq, steal | _] =
      Enum.map(fields, &String.to_integer/1)

    (user + nice + system + irq + softirq + steal) * 1_000_000 / clock_ticks()
  end

  @doc """
  CPU (µs) of this BEAM's threads, grouped: `:schedulers` (the normal
  schedulers), `:dirty`, `:grpc` (gRPC's own threads and the NIF's queue
  thread, `grpc_queue`, on which every gRPC operation completes), `:native` (threads
  the NIF started from a scheduler; they inherit its name, so they are the
  later threads with a scheduler's name: the pools' event loops) and
  `:other` (aux, poller, signal and timer threads, the main thread).
  """
  def beam_threads_cpu_us do
    {:ok, tids} = File.ls("/proc/self/task")

    threads =
      for tid <- tids,
          {:ok, comm} <- [File.read("/proc/self/task/#{tid}/comm")],
          {:ok, stat} <- [File.read("/proc/self/task/#{tid}/stat")] do
        {{started_at(stat), String.to_integer(tid)}, String.trim(comm), cpu_from_stat(stat)}
      end

    # The scheduler is the first started thread of its name.
    first_of_name =
      threads
      |> Enum.group_by(fn {_tid, comm, _cpu} -> comm end)
      |> Map.new(fn {comm, list} -> {comm, list |> Enum.map(&elem(&1, 0)) |> Enum.min()} end)

    Enum.reduce(threads, %{schedulers: 0, dirty: 0, grpc: 0, native: 0, other: 0}, fn {tid, comm,
                                                                                       cpu},
                                                                                      acc ->
      group =
        cond do
          Regex.match?(~r/^\d+_scheduler$/, comm) and first_of_name[comm] == tid ->
            :schedulers

          Regex.match?(~r/^\d+_scheduler$/, comm) ->
            :native

          String.contains?(comm, "dirty") ->
            :dirty

          comm in [
            "nexting_thread",
            "default-executo",
            "event_engine",
            "grpc_global_tim",
            "resolver-execut"
          ] ->
            :grpc

          String.starts_with?(comm, "grpc") ->
            :grpc

          true ->
            :other
        end

      Map.update!(acc, group, &(&1 + cpu))
    end)
  end

  def rss_kb(pid), do: status_field(pid, "VmRSS:")

  def pss_kb(pid) do
    case File.read("/proc/#{pid}/smaps_rollup") do
      {:ok, text} -> field_kb(text, "Pss:")
      {:error, _} -> 0
    end
  end

  defp status_field(pid, name) do
    case File.read("/proc/#{pid}/status") do
      {:ok, text} -> field_kb(text, name)
      {:error, _} -> 0
    end
  end

  defp field_kb(text, name) do
    text
    |> String.split("\n")
    |> Enum.find_value(0, fn line ->
      case String.split(line) do
        [^name, kb | _] -> String.to_integer(kb)
        _ -> nil
      end
    end)
  end

  # ------------------------------------------------------------ pools

  @doc "Starts a pool and waits until all its workers are ready; returns its pid."
  def start_pool(attrs, timeout_ms \\ 60_000) do
    config = Snakepit.Config.normalize_pool(attrs)
    {:ok, pid} = Snakepit.Pool.start_link(config)
    :ok = wait_all_ready(config.name, config.pool_size, timeout_ms)
    pid
  end

  def wait_all_ready(name, count, timeout_ms) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    do_wait_ready(name, count, deadline)
  end

  defp do_wait_ready(name, count, deadline) do
    cond do
      Snakepit.get_stats(name).ready >= count ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        {:error, {:not_ready, name, Snakepit.get_stats(name)}}

      true ->
        Process.sleep(2)
        do_wait_ready(name, count, deadline)
    end
  end

  def stop_pool(pid) do
    ref = Process.monitor(pid)
    GenServer.stop(pid, :normal, 60_000)

    receive do
      {:DOWN, ^ref, _, _, _} -> :ok
    after
      5_000 -> :ok
    end
  end

  def worker_pids(name) do
    {:ok, workers} = Snakepit.Pool.workers(name)
    Enum.map(workers, & &1.os_pid)
  end

  # ------------------------------------------------------ direct client

  @doc "Runs bench/direct_client; returns its RESULT lines as maps."
  def direct(binary, args, env) do
    case System.cmd(binary, args, env: env, stderr_to_stdout: false) do
      {out, 0} ->
        out
        |> String.split("\n")
        |> Enum.filter(&String.starts_with?(&1, "RESULT "))
        |> Enum.map(&parse_result/1)

      {out, status} ->
        raise "#{binary} #{Enum.join(args, " ")} failed (exit #{status}):\n#{out}"
    end
  end

  def parse_result("RESULT " <> line) do
    line
    |> String.split(" ", trim: true)
    |> Map.new(fn item ->
      [key, value] = String.split(item, "=", parts: 2)
      {String.to_atom(key), number_or_string(value)}
    end)
  end

  defp number_or_string(value) do
    case Integer.parse(value) do
      {int, ""} ->
        int

      _ ->
        case Float.parse(value) do
          {float, ""} -> float
          _ -> value
        end
    end
  end

  # ------------------------------------------------------------ machine

  def machine do
    cpuinfo = File.read!("/proc/cpuinfo")

    model =
      cpuinfo
      |> String.split("\n")
      |> Enum.find_value("unknown", fn line ->
        case String.split(line, ":", parts: 2) do
          [key, value] -> if String.trim(key) == "model name", do: String.trim(value)
          _ -> nil
        end
      end)

    %{
      cpu_model: model,
      cores: :erlang.system_info(:logical_processors_available) |> cores(),
      kernel: File.read!("/proc/sys/kernel/osrelease") |> String.trim(),
      os: os_name(),
      memory_mb: div(field_kb(File.read!("/proc/meminfo"), "MemTotal:"), 1024),
      otp: "#{:erlang.system_info(:otp_release)} (erts #{:erlang.system_info(:version)})",
      elixir: System.version(),
      schedulers: :erlang.system_info(:schedulers_online),
      python: command_line(Snakepit.PythonRuntime.resolve!().path, ["--version"]),
      python_grpcio:
        command_line(Snakepit.PythonRuntime.resolve!().path, [
          "-c",
          "import grpc; print(grpc.__version__)"
        ]),
      numpy:
        command_line(Snakepit.PythonRuntime.resolve!().path, [
          "-c",
          "import numpy; print(numpy.__version__)"
        ]),
      libgrpcpp: command_line("pkg-config", ["--modversion", "grpc++"]),
      gxx: command_line("g++", ["-dumpfullversion"]),
      load_average_at_start:
        File.read!("/proc/loadavg") |> String.split() |> Enum.take(3) |> Enum.join(" ")
    }
  end

  defp cores(:unknown), do: :erlang.system_info(:logical_processors)
  defp cores(n), do: n

  defp os_name do
    case File.read("/etc/os-release") do
      {:ok, text} ->
        Regex.run(~r/^PRETTY_NAME="?([^"\n]*)"?/m, text, capture: :all_but_first)
        |> case do
          [name] -> name
          _ -> "unknown"
        end

      _ ->
        "unknown"
    end
  end

  defp command_line(cmd, args) do
    case System.find_executable(cmd) || (File.exists?(cmd) && cmd) do
      path when is_binary(path) ->
        case System.cmd(path, args, stderr_to_stdout: true) do
          {text, 0} -> text |> String.trim() |> String.split("\n") |> List.last()
          _ -> "unknown"
        end

      _ ->
        "unknown"
    end
  end

  # -------------------------------------------------------------- tables

  @doc "A pipe table (Markdown) with padded columns."
  def table(headers, rows) do
    rows = Enum.map(rows, fn row -> Enum.map(row, &cell/1) end)

    widths =
      [headers | rows]
      |> Enum.zip()
      |> Enum.map(fn column ->
        column |> Tuple.to_list() |> Enum.map(&String.length/1) |> Enum.max()
      end)

    line = fn cells ->
      "| " <>
        (cells
         |> Enum.zip(widths)
         |> Enum.map(fn {text, width} -> String.pad_trailing(text, width) end)
         |> Enum.join(" | ")) <>
        " |"
    end

    separator =
      "|" <> (widths |> Enum.map(&String.duplicate("-", &1 + 2)) |> Enum.join("|")) <> "|"

    Enum.join([line.(headers), separator | Enum.map(rows, line)], "\n")
  end

  defp cell(value) when is_binary(value), do: value
  defp cell(value) when is_integer(value), do: Integer.to_string(value)
  defp cell(value) when is_float(value), do: fmt(value)
  defp cell(nil), do: "-"
  defp cell(value), do: to_string(value)

  @doc "A number with precision suited to its size."
  def fmt(value) when is_integer(value), do: Integer.to_string(value)

  def fmt(value) when is_float(value) do
    cond do
      abs(value) >= 1000 -> value |> round() |> Integer.to_string()
      abs(value) >= 100 -> :erlang.float_to_binary(value, decimals: 0)
      abs(value) >= 10 -> :erlang.float_to_binary(value, decimals: 1)
      true -> :erlang.float_to_binary(value, decimals: 2)
    end
  end

  def ratio(_a, b) when b == 0, do: "-"
  def ratio(a, b), do: :erlang.float_to_binary(a / b, decimals: 2)

  # ---------------------------------------------------------------- JSON

  def json(value), do: IO.iodata_to_binary(encode(value, 0))

  defp encode(nil, _), do: "null"
  defp encode(true, _), do: "true"
  defp encode(false, _), do: "false"
  defp encode(value, _) when is_atom(value), do: encode_string(Atom.to_string(value))
  defp encode(value, _) when is_binary(value), do: encode_string(value)
  defp encode(value, _) when is_integer(value), do: Integer.to_string(value)

  defp encode(value, _) when is_float(value),
    do: :erlang.float_to_binary(Float.round(value, 3), [:compact, decimals: 3])

  defp encode(value, depth) when is_tuple(value), do: encode(Tuple.to_list(value), depth)

  defp encode([], _), do: "[]"

  defp encode(list, depth) when is_list(list) do
    inner = Enum.map(list, &[indent(depth + 1), encode(&1, depth + 1)])
    ["[\n", Enum.intersperse(inner, ",\n"), "\n", indent(depth), "]"]
  end

  defp encode(map, depth) when is_map(map) do
    if map_size(map) == 0 do
      "{}"
    else
      inner =
        map
        |> Enum.sort_by(fn {key, _} -> to_string(key) end)
        |> Enum.map(fn {key, value} ->
          [indent(depth + 1), encode_string(to_string(key)), ": ", encode(value, depth + 1)]
        end)

      ["{\n", Enum.intersperse(inner, ",\n"), "\n", indent(depth), "}"]
    end
  end

  defp indent(depth), do: String.duplicate("  ", depth)

  # One JSON string escaper for the project: the Mix tasks'.
  defp encode_string(text), do: Snakepit.MixOutput.json(text)
end
