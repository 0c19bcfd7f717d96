# `make bench`: Snakepit native next to direct gRPC clients.
#
# Run from the project root as
#   MIX_ENV=bench mix run --no-start bench/run.exs
# after `make -f bench/Makefile` built _build/bench/bin/{direct_client,echo_worker}.
# Prints one table per case, writes bench/results/latest.json and rewrites the
# results section of bench/README.md. See bench/README.md for what each case
# measures.
#
# Environment knobs (for development; `make bench` sets none):
#   BENCH_QUICK=1      shorter warmups and windows
#   BENCH_CASES=1,3    run only these cases
#   BENCH_NO_README=1  do not touch bench/README.md

Code.require_file("support.exs", __DIR__)

defmodule Bench.Run do
  alias Bench.Support, as: S

  @showcase "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
  @matmul "bench_adapters.MatmulAdapter"
  @concurrency [1, 8, 64]
  @payloads [{"1 KB", 1_000}, {"100 KB", 100_000}, {"1 MB", 1_000_000}, {"10 MB", 10_000_000}]
  @startup_sizes [1, 2, 4, 8]
  # BEAM flags of the variant run in case 1: no busy waiting by idle schedulers.
  @no_busy_wait "+sbwt none +sbwtdcpu none +sbwtdio none"
  @readme_begin "<!-- bench:results:begin -->"
  @readme_end "<!-- bench:results:end -->"

  def main do
    started = System.monotonic_time(:millisecond)
    setup!()
    ctx = context()
    IO.puts("Snakepit native benchmarks (#{if ctx.quick, do: "quick", else: "full"} run)\n")
    machine = S.machine()
    IO.puts(machine_line(machine) <> "\n")

    cases =
      [
        {1, :unary, &unary/1},
        {2, :native, &native/1},
        {3, :payload, &payload/1},
        {4, :profiles, &profiles/1},
        {5, :startup, &startup/1},
        {6, :thread_ping, &thread_ping/1}
      ]
      |> Enum.filter(fn {number, _, _} -> number in ctx.only end)

    results =
      Enum.reduce(cases, %{}, fn {number, key, fun}, acc ->
        IO.puts("== case #{number}: #{key} ...")
        case_started = System.monotonic_time(:millisecond)
        result = fun.(ctx)
        seconds = (System.monotonic_time(:millisecond) - case_started) / 1000
        result = Map.put(result, :wall_seconds, seconds)
        IO.puts("\n" <> render(key, result) <> "\n")
        Map.put(acc, key, result)
      end)

    total = (System.monotonic_time(:millisecond) - started) / 1000

    report = %{
      generated_at: DateTime.utc_now() |> DateTime.truncate(:second) |> DateTime.to_iso8601(),
      total_seconds: total,
      quick: ctx.quick,
      machine: machine,
      settings: Map.take(ctx, [:warmup_ms, :duration_ms, :rounds, :payload_ms, :profile_ms]),
      cases: results
    }

    File.mkdir_p!(Path.join(ctx.bench_dir, "results"))
    json_path = Path.join([ctx.bench_dir, "results", "latest.json"])
    File.write!(json_path, S.json(report) <> "\n")
    unless System.get_env("BENCH_NO_README") in ["1", "true"], do: update_readme(ctx, report)
    IO.puts("total #{S.fmt(total)} s; raw results in #{Path.relative_to_cwd(json_path)}")
  end

  # ---------------------------------------------------------------- setup

  defp setup! do
    Logger.configure(level: :warning)
    # No pools from config: every case starts and stops its own.
    Application.put_env(:snakepit, :pooling_enabled, false)
    {:ok, _} = Application.ensure_all_started(:snakepit)
  end

  defp context do
    root = File.cwd!()
    bench_dir = Path.join(root, "bench")
    bin = Path.join(root, "_build/bench/bin")
    quick = System.get_env("BENCH_QUICK") in ["1", "true"]

    for tool <- ["direct_client", "echo_worker"], not File.exists?(Path.join(bin, tool)) do
      raise "#{Path.join(bin, tool)} is missing: build it with `make -f bench/Makefile` (or run `make bench`)"
    end

    only =
      case System.get_env("BENCH_CASES") do
        nil ->
          [1, 2, 3, 4, 5, 6]

        "" ->
          [1, 2, 3, 4, 5, 6]

        list ->
          list |> String.split(",", trim: true) |> Enum.map(&String.to_integer(String.trim(&1)))
      end

    python = Snakepit.PythonRuntime.resolve!().path
    bridge = Snakepit.Python.bridge_dir()
    adapters = Path.join(bench_dir, "python")

    %{
      quick: quick,
      only: only,
      root: root,
      bench_dir: bench_dir,
      client: Path.join(bin, "direct_client"),
      echo_worker: Path.join(bin, "echo_worker"),
      python: python,
      # The pool's own worker command line (after the interpreter) for a
      # process-profile showcase worker: the direct client starts the same.
      worker_argv:
        :direct
        |> pool(@showcase, %{})
        |> Snakepit.Config.normalize_pool()
        |> Snakepit.Config.native_config(python, Snakepit.Config.globals([]))
        |> Map.fetch!(:worker_argv),
      adapters_dir: adapters,
      cores: System.schedulers_online(),
      warmup_ms: if(quick, do: 500, else: 1_000),
      duration_ms: if(quick, do: 1_500, else: 4_000),
      rounds: if(quick, do: 1, else: 3),
      payload_ms: if(quick, do: 1_500, else: 3_000),
      profile_ms: if(quick, do: 1_500, else: 4_000),
      # What the pool gives its process-profile workers, plus quiet logs.
      direct_env: [
        {"PYTHONPATH", Enum.join([bridge, adapters], ":")},
        {"PYTHONUNBUFFERED", "1"},
        {"SNAKEPIT_LOG_LEVEL", "ERROR"}
        | Enum.map(
            ~w(OPENBLAS_NUM_THREADS MKL_NUM_THREADS OMP_NUM_THREADS NUMEXPR_NUM_THREADS VECLIB_MAXIMUM_THREADS),
            &{&1, "1"}
          )
      ]
    }
  end

  # The direct client's ping cases: one call in flight per worker, like the
  # process profile.
  # The direct client calls as the pool does: on each worker's call stream
  # ("direct_c"); "unary_c" is the same load with one unary RPC per call.
  defp direct_ping_specs(ctx) do
    for {prefix, stream} <- [{"direct", 1}, {"unary", 0}], c <- @concurrency do
      spec(
        name: "#{prefix}_#{c}",
        tool: "ping",
        concurrency: c,
        cap: 1,
        stream: stream,
        warmup: ctx.warmup_ms / 1000,
        duration: ctx.duration_ms / 1000
      )
    end
  end

  # Case 2 adds "threads_c": the client on the stream with a thread per
  # caller, each blocked until its reply wakes it (as a BEAM process waits
  # in `receive`); direct_c's callers issue the next call on the gRPC thread
  # that took the reply, which no caller in an application does.
  defp native_ping_specs(ctx) do
    threaded =
      for c <- @concurrency do
        spec(
          name: "threads_#{c}",
          tool: "ping",
          concurrency: c,
          cap: 1,
          stream: 1,
          threads: 1,
          warmup: ctx.warmup_ms / 1000,
          duration: ctx.duration_ms / 1000
        )
      end

    direct_ping_specs(ctx) ++ threaded
  end

  defp by_name(rounds, key, name),
    do: Enum.map(rounds, fn r -> Enum.find(Map.fetch!(r, key), &(&1.name == name)) end)

  # What a pool's workers get to serve with grpc.server instead of grpc's
  # core layer (priv/python/snakepit_bridge/core_server.py).
  @fallback_env [{"SNAKEPIT_WORKER_SERVER", "fallback"}]

  # A pool of the bench.
  defp pool(name, adapter, extra) do
    Map.merge(
      %{
        name: name,
        worker_profile: :process,
        pool_size: 2,
        startup_batch_delay_ms: 0,
        adapter_args: ["--adapter", adapter]
      },
      extra
    )
  end

  # ------------------------------------------------------- pool measuring

  # Measures `fun` through a running pool: throughput, latency and CPU of the
  # BEAM (with its threads by group), of the pool's workers and of the whole
  # machine over the window.
  defp measure_pool(ctx, name, concurrency, duration_ms, fun, opts \\ []) do
    workers = S.worker_pids(name)

    sampler = fn ->
      %{
        beam: S.process_cpu_us(:self),
        threads: S.beam_threads_cpu_us(),
        workers: S.processes_cpu_us(workers),
        machine: S.machine_busy_us(),
        rss_kb: if(opts[:memory], do: workers |> Enum.map(&S.rss_kb/1) |> Enum.sum()),
        pss_kb: if(opts[:memory], do: workers |> Enum.map(&S.pss_kb/1) |> Enum.sum())
      }
    end

    result = S.load(concurrency, ctx.warmup_ms, duration_ms, fun, sampler)
    {first, last} = result.samples
    calls = max(result.calls, 1)
    beam = last.beam - first.beam
    worker_cpu = last.workers - first.workers
    other = last.machine - first.machine - beam - worker_cpu

    threads =
      Map.new(last.threads, fn {group, us} ->
        {group, (us - Map.fetch!(first.threads, group)) / calls}
      end)

    result
    |> Map.delete(:samples)
    |> Map.merge(%{
      concurrency: concurrency,
      beam_cpu_us_per_call: beam / calls,
      beam_threads_cpu_us_per_call: threads,
      workers_cpu_us_per_call: worker_cpu / calls,
      background_cpu_pct: 100 * max(other, 0) / (ctx.cores * duration_ms * 1000)
    })
    |> Map.merge(
      if opts[:memory],
        do: %{workers_rss_mb: last.rss_kb / 1024, workers_pss_mb: last.pss_kb / 1024},
        else: %{}
    )
  end

  defp direct_cases(ctx, python, cases) do
    args =
      [
        "run",
        "--python",
        python,
        "--workers",
        "2"
      ] ++
        Enum.flat_map(cases, fn spec -> ["--case", spec] end) ++ ["--" | ctx.worker_argv]

    ctx.client
    |> S.direct(args, ctx.direct_env)
    |> Enum.map(fn r ->
      calls = max(r.calls, 1)
      other = r.machine_cpu_us - r.client_cpu_us - r.workers_cpu_us

      %{
        name: r.name,
        concurrency: r.concurrency,
        in_flight_per_worker: r.cap,
        calls: r.calls,
        errors: r.errors,
        seconds: r.seconds,
        calls_per_s: r.calls_per_s,
        mb_per_s: r.mb_per_s,
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        mean_us: r.mean_us,
        client_cpu_us_per_call: r.client_cpu_us / calls,
        workers_cpu_us_per_call: r.workers_cpu_us / calls,
        background_cpu_pct: 100 * max(other, 0) / (ctx.cores * r.seconds * 1_000_000)
      }
    end)
  end

  defp spec(fields), do: Enum.map_join(fields, ",", fn {key, value} -> "#{key}=#{value}" end)

  # One run per round -> one run whose every number is the median over the
  # rounds (nested maps too).
  defp median_run([first | _] = runs) do
    Map.new(first, fn {key, _} ->
      values = Enum.map(runs, &Map.get(&1, key))

      value =
        cond do
          Enum.all?(values, &is_number/1) -> median(values)
          Enum.all?(values, &is_map/1) -> median_run(values)
          true -> hd(values)
        end

      {key, value}
    end)
  end

  defp ratios(pools, directs),
    do: Enum.zip_with(pools, directs, &(&1.calls_per_s / &2.calls_per_s))

  # ------------------------------------------------------ 1. unary overhead

  defp unary(ctx) do
    rounds =
      for round <- 1..ctx.rounds do
        IO.puts("  round #{round}: direct client")

        capped = direct_ping_specs(ctx)

        # For reference (round 1 only): every caller's call in flight at
        # once, which the process profile never does (capacity 1 per worker).
        pipelined =
          if round == 1 do
            for c <- [8, 64] do
              spec(
                name: "pipelined_#{c}",
                tool: "ping",
                concurrency: c,
                cap: 0,
                stream: 1,
                warmup: ctx.warmup_ms / 1000,
                duration: ctx.duration_ms / 1000
              )
            end
          else
            []
          end

        direct = direct_cases(ctx, ctx.python, capped ++ pipelined)
        IO.puts("  round #{round}: pool")
        pid = S.start_pool(pool(:bench_unary, @showcase, %{}))

        pooled =
          for c <- @concurrency do
            measure_pool(ctx, :bench_unary, c, ctx.duration_ms, fn _ ->
              Snakepit.execute("ping", %{}, pool_name: :bench_unary)
            end)
          end

        S.stop_pool(pid)
        IO.puts("  round #{round}: pool, workers on the grpc.server fallback")
        pid = S.start_pool(pool(:bench_unary_fallback, @showcase, %{adapter_env: @fallback_env}))

        fallback =
          for c <- @concurrency do
            measure_pool(ctx, :bench_unary_fallback, c, ctx.duration_ms, fn _ ->
              Snakepit.execute("ping", %{}, pool_name: :bench_unary_fallback)
            end)
          end

        S.stop_pool(pid)
        IO.puts("  round #{round}: pool, in a second BEAM started with #{@no_busy_wait}")

        %{
          direct: direct,
          pool: pooled,
          pool_fallback: fallback,
          pool_no_busy_wait: child_beam(ctx, "unary_pool", @no_busy_wait)
        }
      end

    rows =
      for c <- @concurrency do
        pools = Enum.map(rounds, fn r -> Enum.find(r.pool, &(&1.concurrency == c)) end)
        directs = by_name(rounds, :direct, "direct_#{c}")
        unaries = by_name(rounds, :direct, "unary_#{c}")

        quiets =
          Enum.map(rounds, fn r -> Enum.find(r.pool_no_busy_wait, &(&1.concurrency == c)) end)

        fallbacks =
          Enum.map(rounds, fn r -> Enum.find(r.pool_fallback, &(&1.concurrency == c)) end)

        pool = median_run(pools)
        direct = median_run(directs)

        %{
          concurrency: c,
          pool: pool,
          direct: direct,
          pool_no_busy_wait: median_run(quiets),
          pool_fallback: median_run(fallbacks),
          direct_unary: median_run(unaries),
          round_ratios_unary: ratios(pools, unaries),
          ratio_unary: median(ratios(pools, unaries)),
          round_ratios_core_fallback: ratios(pools, fallbacks),
          ratio_core_fallback: median(ratios(pools, fallbacks)),
          # Each round's ratio compares runs made a minute apart; the median
          # of those is the headline number.
          round_ratios: ratios(pools, directs),
          round_ratios_no_busy_wait: ratios(quiets, directs),
          ratio: median(ratios(pools, directs)),
          ratio_no_busy_wait: median(ratios(quiets, directs)),
          added_p50_us: pool.p50_us - direct.p50_us,
          added_p99_us: pool.p99_us - direct.p99_us
        }
      end

    pipelined =
      rounds
      |> hd()
      |> Map.fetch!(:direct)
      |> Enum.filter(&String.starts_with?(&1.name, "pipelined"))

    %{rows: rows, pipelined_direct: pipelined, rounds: rounds}
  end

  # Runs `mode` of this script in a second BEAM with extra emulator flags and
  # returns its RESULT lines. This BEAM idles meanwhile (no pool running).
  defp child_beam(ctx, mode, flags) do
    mix = System.find_executable("mix") || raise "mix not found on PATH"
    erl_flags = String.trim("#{System.get_env("ERL_FLAGS", "")} #{flags}")

    env = [
      {"MIX_ENV", "bench"},
      {"ERL_FLAGS", erl_flags},
      {"BENCH_CHILD", mode},
      {"BENCH_QUICK", if(ctx.quick, do: "1", else: "0")}
    ]

    case System.cmd(mix, ["run", "--no-start", Path.join(ctx.bench_dir, "run.exs")],
           env: env,
           cd: ctx.root
         ) do
      {out, 0} ->
        out
        |> String.split("\n")
        |> Enum.filter(&String.starts_with?(&1, "RESULT "))
        |> Enum.map(&S.parse_result/1)

      {out, status} ->
        raise "the #{mode} run in a second BEAM failed (exit #{status}):\n#{out}"
    end
  end

  @doc false
  # BENCH_CHILD=unary_pool: case 1's pool half, printed as RESULT lines;
  # BENCH_CHILD=native_pool: case 2's.
  def child(mode) do
    setup!()
    ctx = context()

    extra =
      case mode do
        "unary_pool" -> %{}
        "native_pool" -> %{python_executable: ctx.echo_worker}
      end

    pid = S.start_pool(pool(:bench_child, @showcase, extra))

    for c <- @concurrency do
      r =
        measure_pool(ctx, :bench_child, c, ctx.duration_ms, fn _ ->
          Snakepit.execute("ping", %{}, pool_name: :bench_child)
        end)

      t = r.beam_threads_cpu_us_per_call

      fields = [
        concurrency: c,
        calls: r.calls,
        errors: r.errors,
        seconds: r.seconds,
        calls_per_s: r.calls_per_s,
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        mean_us: r.mean_us,
        beam_cpu_us_per_call: r.beam_cpu_us_per_call,
        schedulers_cpu_us_per_call: t.schedulers,
        grpc_cpu_us_per_call: t.grpc,
        workers_cpu_us_per_call: r.workers_cpu_us_per_call,
        background_cpu_pct: r.background_cpu_pct
      ]

      IO.puts(
        "RESULT " <>
          Enum.map_join(fields, " ", fn {k, v} ->
            "#{k}=#{if is_float(v), do: Float.round(v, 3), else: v}"
          end)
      )
    end

    S.stop_pool(pid)
  end

  # --------------------------------------------------- 2. native runtime

  defp native(ctx) do
    rounds =
      for round <- 1..ctx.rounds do
        IO.puts("  round #{round}: direct client -> echo workers")

        direct = direct_cases(ctx, ctx.echo_worker, native_ping_specs(ctx))

        IO.puts("  round #{round}: pool of echo workers")
        pid = S.start_pool(pool(:bench_native, @showcase, %{python_executable: ctx.echo_worker}))

        pooled =
          for c <- @concurrency do
            measure_pool(ctx, :bench_native, c, ctx.duration_ms, fn _ ->
              Snakepit.execute("ping", %{}, pool_name: :bench_native)
            end)
          end

        S.stop_pool(pid)

        IO.puts(
          "  round #{round}: pool of echo workers, in a second BEAM started with #{@no_busy_wait}"
        )

        %{
          direct: direct,
          pool: pooled,
          pool_no_busy_wait: child_beam(ctx, "native_pool", @no_busy_wait)
        }
      end

    rows =
      for c <- @concurrency do
        pools = Enum.map(rounds, fn r -> Enum.find(r.pool, &(&1.concurrency == c)) end)
        directs = by_name(rounds, :direct, "direct_#{c}")
        unaries = by_name(rounds, :direct, "unary_#{c}")
        threaded = by_name(rounds, :direct, "threads_#{c}")

        quiets =
          Enum.map(rounds, fn r -> Enum.find(r.pool_no_busy_wait, &(&1.concurrency == c)) end)

        %{
          concurrency: c,
          pool: median_run(pools),
          pool_no_busy_wait: median_run(quiets),
          direct: median_run(directs),
          direct_unary: median_run(unaries),
          direct_threads: median_run(threaded),
          round_ratios: ratios(pools, directs),
          ratio: median(ratios(pools, directs))
        }
      end

    %{rows: rows, rounds: rounds}
  end

  # ------------------------------------------------------- 3. payload size

  defp payload(ctx) do
    IO.puts("  direct client")

    direct =
      direct_cases(
        ctx,
        ctx.python,
        for {label, bytes} <- @payloads do
          spec(
            name: String.replace(label, " ", ""),
            tool: "echo",
            concurrency: 2,
            cap: 1,
            stream: 1,
            bytes: bytes,
            warmup: ctx.warmup_ms / 1000,
            duration: ctx.payload_ms / 1000
          )
        end
      )

    IO.puts("  pool")
    pid = S.start_pool(pool(:bench_payload, @showcase, %{}))

    rows =
      for {{label, bytes}, direct_run} <- Enum.zip(@payloads, direct) do
        args = %{data: String.duplicate("x", bytes)}

        run =
          measure_pool(ctx, :bench_payload, 2, ctx.payload_ms, fn _ ->
            case Snakepit.execute("echo", args, pool_name: :bench_payload, timeout: 60_000) do
              {:ok, %{"echoed" => %{"data" => data}}} when byte_size(data) == bytes ->
                {:ok, bytes}

              other ->
                {:error, other}
            end
          end)

        run = Map.put(run, :mb_per_s, run.calls_per_s * bytes / 1_000_000)

        %{
          size: label,
          bytes: bytes,
          pool: run,
          direct: direct_run,
          ratio: run.calls_per_s / max(direct_run.calls_per_s, 1.0e-9)
        }
      end

    S.stop_pool(pid)
    %{rows: rows, concurrency: 2}
  end

  # ---------------------------------------------------------- 4. profiles

  defp profiles(ctx) do
    env = [{"PYTHONPATH", ctx.adapters_dir}]

    variants = [
      {"process, 4 workers", pool(:bench_process, @matmul, %{pool_size: 4, adapter_env: env})},
      {"thread, 1 worker x 4 threads",
       pool(:bench_thread, @matmul, %{
         worker_profile: :thread,
         pool_size: 1,
         threads_per_worker: 4,
         adapter_env: env
       })}
    ]

    rows =
      for {label, attrs} <- variants do
        IO.puts("  #{label}")
        pid = S.start_pool(attrs)
        idle_rss = attrs.name |> S.worker_pids() |> Enum.map(&S.rss_kb/1) |> Enum.sum()

        run =
          measure_pool(
            ctx,
            attrs.name,
            8,
            ctx.profile_ms,
            fn _ -> Snakepit.execute("matmul", %{}, pool_name: attrs.name) end,
            memory: true
          )

        S.stop_pool(pid)
        Map.merge(%{profile: label, workers: attrs.pool_size, idle_rss_mb: idle_rss / 1024}, run)
      end

    %{rows: rows, concurrency: 8}
  end

  # ----------------------------------------------------------- 5. startup

  defp startup(ctx) do
    repeat = if ctx.quick, do: 1, else: 3
    IO.puts("  direct: one Python worker, #{repeat} times")

    direct =
      S.direct(
        ctx.client,
        [
          "startup",
          "--python",
          ctx.python,
          "--repeat",
          "#{repeat}",
          "--" | ctx.worker_argv
        ],
        ctx.direct_env
      )
      |> Enum.map(& &1.ms)

    rows =
      for n <- @startup_sizes do
        IO.puts("  pool of #{n}, #{repeat} times")

        times =
          for _ <- 1..repeat do
            name = :"bench_startup_#{n}"
            attrs = Snakepit.Config.normalize_pool(pool(name, @showcase, %{pool_size: n}))
            t0 = System.monotonic_time(:microsecond)
            {:ok, pid} = Snakepit.Pool.start_link(attrs)
            :ok = S.wait_all_ready(name, n, 120_000)
            ms = (System.monotonic_time(:microsecond) - t0) / 1000
            S.stop_pool(pid)
            ms
          end

        %{workers: n, ms: median(times), runs_ms: times}
      end

    %{direct_ms: median(direct), direct_runs_ms: direct, rows: rows}
  end

  # ---------------------------------------- 6. thread profile, both paths

  # One thread-profile worker x 4 threads, 8 callers of ping, its worker on
  # the core layer and on the grpc.server fallback, alternating per round.
  defp thread_ping(ctx) do
    paths = [core: [], fallback: @fallback_env]

    rounds =
      for round <- 1..ctx.rounds do
        Map.new(paths, fn {path, env} ->
          IO.puts("  round #{round}: thread pool, workers on #{path}")
          name = :"bench_thread_#{path}"

          attrs =
            pool(name, @showcase, %{
              worker_profile: :thread,
              threads_per_worker: 4,
              pool_size: 1,
              adapter_env: env
            })

          pid = S.start_pool(attrs)

          r =
            measure_pool(ctx, name, 8, ctx.duration_ms, fn _ ->
              Snakepit.execute("ping", %{}, pool_name: name)
            end)

          S.stop_pool(pid)
          {path, r}
        end)
      end

    cores = Enum.map(rounds, & &1.core)
    fallbacks = Enum.map(rounds, & &1.fallback)

    %{
      core: median_run(cores),
      fallback: median_run(fallbacks),
      round_ratios: ratios(cores, fallbacks),
      ratio: median(ratios(cores, fallbacks)),
      rounds: rounds
    }
  end

  defp median(list) do
    sorted = Enum.sort(list)
    n = length(sorted)

    if rem(n, 2) == 1,
      do: Enum.at(sorted, div(n, 2)),
      else: (Enum.at(sorted, div(n, 2) - 1) + Enum.at(sorted, div(n, 2))) / 2
  end

  # ----------------------------------------------------------- rendering

  defp machine_line(m) do
    "machine: #{m.cpu_model}, #{m.cores} cores, #{m.memory_mb} MB, #{m.os}, Linux #{m.kernel}; " <>
      "OTP #{m.otp}, Elixir #{m.elixir}, #{m.python}, grpcio #{m.python_grpcio}, libgrpc++ #{m.libgrpcpp}, " <>
      "NumPy #{m.numpy}, g++ #{m.gxx}; load average at start #{m.load_average_at_start}"
  end

  defp ratio_cell(ratio, [_]), do: :erlang.float_to_binary(ratio, decimals: 2)

  defp ratio_cell(ratio, rounds) do
    :erlang.float_to_binary(ratio, decimals: 2) <>
      " (" <> Enum.map_join(rounds, " ", &:erlang.float_to_binary(&1, decimals: 2)) <> ")"
  end

  defp render(:unary, r) do
    throughput =
      for row <- r.rows do
        [
          row.concurrency,
          row.direct.calls_per_s,
          row.pool.calls_per_s,
          ratio_cell(row.ratio, row.round_ratios),
          row.pool_no_busy_wait.calls_per_s,
          ratio_cell(row.ratio_no_busy_wait, row.round_ratios_no_busy_wait),
          row.pool_fallback.calls_per_s,
          ratio_cell(row.ratio_core_fallback, row.round_ratios_core_fallback),
          row.direct_unary.calls_per_s,
          ratio_cell(row.ratio_unary, row.round_ratios_unary),
          "#{S.fmt(row.direct.background_cpu_pct)} / #{S.fmt(row.pool.background_cpu_pct)} / #{S.fmt(row.pool_no_busy_wait.background_cpu_pct)} / #{S.fmt(row.pool_fallback.background_cpu_pct)}"
        ]
      end

    latency =
      for row <- r.rows do
        [
          row.concurrency,
          row.direct.p50_us,
          row.pool.p50_us,
          row.added_p50_us,
          row.direct.p99_us,
          row.pool.p99_us,
          "#{S.fmt(row.direct.client_cpu_us_per_call)} / #{S.fmt(row.direct_unary.client_cpu_us_per_call)}",
          row.pool.beam_cpu_us_per_call,
          row.pool_no_busy_wait.beam_cpu_us_per_call,
          "#{S.fmt(row.direct.workers_cpu_us_per_call)} / #{S.fmt(row.pool.workers_cpu_us_per_call)} / #{S.fmt(row.pool_fallback.workers_cpu_us_per_call)}"
        ]
      end

    pipelined =
      for p <- r.pipelined_direct do
        "#{p.concurrency} callers: #{S.fmt(p.calls_per_s)} calls/s (p50 #{S.fmt(p.p50_us)} µs)"
      end

    verdict = fn key ->
      r.rows
      |> Enum.filter(&(&1.concurrency in [8, 64]))
      |> Enum.map_join(", ", fn row ->
        "#{:erlang.float_to_binary(Map.fetch!(row, key), decimals: 2)} at #{row.concurrency}"
      end)
    end

    met? = fn key, target ->
      Enum.all?(r.rows, fn row -> row.concurrency == 1 or Map.fetch!(row, key) >= target end)
    end

    busy =
      Enum.any?(r.rows, fn row ->
        Enum.any?(
          [row.direct, row.pool, row.pool_no_busy_wait, row.pool_fallback],
          &(&1.background_cpu_pct > 10)
        )
      end)

    """
    1. Unary overhead: Snakepit.execute("ping") on a process pool of 2 Python workers vs a C++ gRPC
       client calling 2 of the same workers directly, one call in flight per worker, FIFO queue.
       Medians of #{length(r.rounds)} rounds; pool/direct is the median of the rounds' ratios (each
       round's ratio in brackets). The pool and the direct client send calls on each worker's
       ExecuteToolCalls stream; "direct unary": the client with one unary RPC per call instead.
       Workers serve from grpc's core layer; "fallback": the same pool
       with its workers on grpc.server (SNAKEPIT_WORKER_SERVER=fallback), core/fallback the ratio of
       the two pools. "+sbwt none": the core-layer pool in a BEAM started with
       #{@no_busy_wait}.
    #{S.table(["callers", "direct calls/s", "pool calls/s", "pool/direct", "pool +sbwt none calls/s", "pool/direct", "pool on fallback calls/s", "core/fallback", "direct unary calls/s", "pool/direct unary", "other load % (direct / pool / +sbwt / fallback)"], throughput)}

    #{S.table(["callers", "direct p50 µs", "pool p50 µs", "added p50 µs", "direct p99 µs", "pool p99 µs", "client CPU µs/call (stream / unary)", "BEAM CPU µs/call", "BEAM CPU +sbwt none", "Python CPU µs/call (direct / pool / fallback)"], latency)}
    acceptance, pool/direct >= 0.90 at 8 and 64 callers: default BEAM #{verdict.(:ratio)} -> #{if met?.(:ratio, 0.9), do: "met", else: "NOT met"}; +sbwt none #{verdict.(:ratio_no_busy_wait)} -> #{if met?.(:ratio_no_busy_wait, 0.9), do: "met", else: "NOT met"}
    acceptance, pool on the core layer >= 1.4x the pool on the fallback at 8 and 64 callers: #{verdict.(:ratio_core_fallback)} -> #{if met?.(:ratio_core_fallback, 1.4), do: "met", else: "NOT met"}
    reference, direct client with every caller's call in flight at once (no per-worker limit): #{Enum.join(pipelined, "; ")}#{if busy, do: "\nWARNING: other processes used more than 10% of the machine during some windows; numbers are noisy.", else: ""}\
    """
  end

  defp render(:native, r) do
    rows =
      for row <- r.rows do
        t = row.pool.beam_threads_cpu_us_per_call

        [
          row.concurrency,
          row.pool.calls_per_s,
          row.pool.p50_us,
          row.pool.beam_cpu_us_per_call,
          t.schedulers,
          t.grpc,
          t.native + t.dirty + t.other,
          row.pool.workers_cpu_us_per_call,
          row.direct.calls_per_s,
          row.direct.client_cpu_us_per_call,
          ratio_cell(row.ratio, row.round_ratios),
          row.direct_unary.client_cpu_us_per_call,
          S.ratio(row.pool.beam_cpu_us_per_call, row.direct.client_cpu_us_per_call),
          row.pool_no_busy_wait.beam_cpu_us_per_call,
          S.ratio(row.pool_no_busy_wait.beam_cpu_us_per_call, row.direct.client_cpu_us_per_call),
          row.direct_threads.calls_per_s,
          row.direct_threads.client_cpu_us_per_call,
          S.ratio(row.pool.beam_cpu_us_per_call, row.direct_threads.client_cpu_us_per_call),
          "#{S.fmt(row.direct.background_cpu_pct)} / #{S.fmt(row.pool.background_cpu_pct)}"
        ]
      end

    """
    2. Native runtime alone: Snakepit.execute("ping") on a pool of 2 C++ echo workers (bench/echo_worker.cpp).
       BEAM CPU = the BEAM process's utime+stime over the window / calls, split by thread.
       Medians of #{length(r.rounds)} rounds; pool/direct as in case 1 (both on the call stream);
       "unary client": the direct client's CPU with one unary RPC per call; BEAM/client: BEAM CPU
       per call over the direct client's. The direct client's callers issue their next call on the
       gRPC thread that took the reply; "threaded client": the same client with a thread per
       caller that blocks until its reply wakes it, as a BEAM process waits in `receive`.
       "+sbwt none": the pool in a second BEAM started with #{@no_busy_wait}.
    #{S.table(["conc", "pool calls/s", "pool p50 µs", "BEAM CPU µs/call", "schedulers", "gRPC threads", "other threads", "echo CPU µs/call", "direct calls/s", "client CPU µs/call", "pool/direct", "unary client CPU µs/call", "BEAM/client", "BEAM CPU +sbwt none", "BEAM +sbwt none/client", "threaded client calls/s", "threaded client CPU µs/call", "BEAM/threaded client", "other load % (direct / pool)"], rows)}\
    """
  end

  defp render(:payload, r) do
    rows =
      for row <- r.rows do
        [
          row.size,
          row.pool.mb_per_s,
          row.direct.mb_per_s,
          S.ratio(row.pool.calls_per_s, row.direct.calls_per_s),
          row.pool.calls_per_s,
          row.direct.calls_per_s,
          row.pool.p50_us / 1000,
          row.direct.p50_us / 1000,
          row.pool.beam_cpu_us_per_call / 1000,
          row.direct.client_cpu_us_per_call / 1000,
          "#{S.fmt(row.direct.workers_cpu_us_per_call / 1000)} / #{S.fmt(row.pool.workers_cpu_us_per_call / 1000)}",
          "#{S.fmt(row.direct.background_cpu_pct)} / #{S.fmt(row.pool.background_cpu_pct)}"
        ]
      end

    """
    3. Payload size: echo of %{data: <n bytes>} through the pool (showcase echo, 2 workers, 2 callers)
       vs the direct client (same JSON parameter). MB/s = payload bytes (one way, 10^6) per second.
    #{S.table(["payload", "pool MB/s", "direct MB/s", "pool/direct", "pool calls/s", "direct calls/s", "pool p50 ms", "direct p50 ms", "BEAM CPU ms/call", "client CPU ms/call", "Python CPU ms/call (direct / pool)", "other load % (direct / pool)"], rows)}\
    """
  end

  defp render(:profiles, r) do
    rows =
      for row <- r.rows do
        [
          row.profile,
          row.calls_per_s,
          row.p50_us / 1000,
          row.p99_us / 1000,
          row.workers_rss_mb,
          row.workers_pss_mb,
          row.workers_cpu_us_per_call / 1000,
          row.background_cpu_pct
        ]
      end

    """
    4. Profiles: NumPy 256x256 matmul (bench/python/bench_adapters.py), #{r.concurrency} callers.
       RSS = sum of VmRSS of the pool's worker processes after the run (PSS counts shared pages once).
    #{S.table(["profile", "calls/s", "p50 ms", "p99 ms", "workers RSS MB", "workers PSS MB", "worker CPU ms/call", "other load %"], rows)}\
    """
  end

  defp render(:startup, r) do
    rows =
      for row <- r.rows do
        [row.workers, row.ms, row.ms / r.direct_ms, Enum.map_join(row.runs_ms, " / ", &S.fmt/1)]
      end

    """
    5. Startup: pool start to all workers ready (median of runs) vs one Python worker spawned
       directly with a ready pipe (median #{S.fmt(r.direct_ms)} ms; runs #{Enum.map_join(r.direct_runs_ms, " / ", &S.fmt/1)} ms).
    #{S.table(["workers", "pool ms", "x one direct worker", "runs ms"], rows)}\
    """
  end

  # -------------------------------------------------------------- README

  # The terminal text as Markdown: tables stay tables (blank lines around
  # them), other lines become paragraphs with hard line breaks.
  defp render(:thread_ping, r) do
    rows =
      for {label, x} <- [{"core layer", r.core}, {"grpc.server fallback", r.fallback}] do
        [
          label,
          x.calls_per_s,
          x.p50_us,
          x.p99_us,
          x.workers_cpu_us_per_call,
          x.beam_cpu_us_per_call,
          x.background_cpu_pct
        ]
      end

    """
    6. Thread profile: Snakepit.execute("ping") with 8 callers on 1 worker x 4 threads, the worker
       on grpc's core layer and on the grpc.server fallback. Medians of #{length(r.rounds)} rounds.
    #{S.table(["worker server", "calls/s", "p50 µs", "p99 µs", "Python CPU µs/call", "BEAM CPU µs/call", "other load %"], rows)}
    acceptance, core layer >= 2x the fallback: #{ratio_cell(r.ratio, r.round_ratios)} -> #{if r.ratio >= 2.0, do: "met", else: "NOT met"}\
    """
  end

  defp markdown(text) do
    text
    |> String.split("\n")
    |> Enum.chunk_by(&String.starts_with?(&1, "|"))
    |> Enum.map(fn [first | _] = lines ->
      if String.starts_with?(first, "|"),
        do: Enum.join(lines, "\n"),
        else:
          lines
          |> Enum.map(
            &(&1
              |> String.trim()
              |> String.replace("<", "&lt;")
              |> String.replace(">", "&gt;"))
          )
          |> Enum.reject(&(&1 == ""))
          |> Enum.join("  \n")
    end)
    |> Enum.reject(&(&1 == ""))
    |> Enum.join("\n\n")
  end

  defp update_readme(ctx, report) do
    path = Path.join(ctx.bench_dir, "README.md")

    text =
      if File.exists?(path),
        do: File.read!(path),
        else: "# Benchmarks\n\n#{@readme_begin}\n#{@readme_end}\n"

    m = report.machine

    tables =
      [:unary, :native, :payload, :profiles, :startup, :thread_ping]
      |> Enum.filter(&Map.has_key?(report.cases, &1))
      |> Enum.map_join("\n\n", fn key -> markdown(render(key, report.cases[key])) end)

    section = """
    #{@readme_begin}
    Generated by `make bench` on #{report.generated_at} (#{if report.quick, do: "quick run", else: "full run"}, #{S.fmt(report.total_seconds)} s).

    | machine | |
    |---|---|
    | CPU | #{m.cpu_model} |
    | cores | #{m.cores} (BEAM schedulers: #{m.schedulers}) |
    | memory | #{m.memory_mb} MB |
    | OS, kernel | #{m.os}, Linux #{m.kernel} |
    | Erlang/OTP, Elixir | #{m.otp}, #{m.elixir} |
    | Python, grpcio, NumPy | #{m.python}, #{m.python_grpcio}, #{m.numpy} |
    | libgrpc++, g++ | #{m.libgrpcpp}, #{m.gxx} |
    | load average at start | #{m.load_average_at_start} |

    #{tables}

    #{@readme_end}\
    """

    new_text =
      case String.split(text, @readme_begin, parts: 2) do
        [before, rest] ->
          after_section =
            case String.split(rest, @readme_end, parts: 2) do
              [_, tail] -> tail
              [_] -> "\n"
            end

          before <> section <> after_section

        [_] ->
          text <> "\n" <> section <> "\n"
      end

    File.write!(path, new_text)
  end
end

case System.get_env("BENCH_CHILD") do
  nil -> Bench.Run.main()
  mode -> Bench.Run.child(mode)
end
