defmodule Snakepit.ConfigTest do
  use ExUnit.Case, async: true

  alias Snakepit.Config

  @showcase "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
  @process_env [
    {"OPENBLAS_NUM_THREADS", "1"},
    {"MKL_NUM_THREADS", "1"},
    {"OMP_NUM_THREADS", "1"},
    {"NUMEXPR_NUM_THREADS", "1"},
    {"VECLIB_MAXIMUM_THREADS", "1"}
  ]

  describe "pools/1 with no configuration" do
    test "returns one fully defaulted :default pool" do
      assert [pool] = Config.pools([])

      assert pool == %{
               name: :default,
               worker_profile: :process,
               pool_size: System.schedulers_online() * 2,
               threads_per_worker: 10,
               capacity_per_worker: 1,
               adapter_module: nil,
               adapter_args: ["--adapter", @showcase],
               adapter: @showcase,
               adapter_env: [],
               env: @process_env,
               startup_batch_size: 10,
               startup_batch_delay_ms: 500,
               heartbeat: %{
                 enabled: true,
                 ping_interval_ms: 2_000,
                 timeout_ms: 10_000,
                 max_missed_heartbeats: 3,
                 initial_delay_ms: 0,
                 dependent: true
               },
               thread_safety_checks: false,
               worker_ttl: :infinity,
               worker_ttl_ms: nil,
               worker_max_requests: :infinity,
               graceful_shutdown_timeout_ms: 6_000,
               affinity: :hint,
               capacity_strategy: :pool,
               max_workers: 150,
               memory_threshold_mb: nil,
               session_ttl_ms: 3_600_000,
               tool_overrun_grace_ms: 5_000,
               max_queue_size: 1_000,
               queue_timeout_ms: 10_000,
               python_executable: nil,
               restart_backoff_ms: 500,
               max_restart_backoff_ms: 10_000,
               scope: :local
             }
    end

    test "ignores unrelated application keys" do
      assert [%{name: :default}] = Config.pools(pooling_enabled: true, log_level: :info)
    end

    test "treats pools: nil as absent" do
      assert [%{name: :default}] = Config.pools(pools: nil)
    end
  end

  describe "pools/1 legacy form" do
    test "builds one :default pool from the top-level keys" do
      env = [
        pool_size: 3,
        adapter_module: MyApp.Adapter,
        adapter_args: ["--adapter", "myapp.Legacy"],
        adapter_env: [{"FOO", "bar"}],
        pool_config: %{startup_batch_size: 2, worker_ttl: {5, :minutes}}
      ]

      assert [pool] = Config.pools(env)
      assert pool.name == :default
      assert pool.pool_size == 3
      assert pool.adapter_module == MyApp.Adapter
      assert pool.adapter == "myapp.Legacy"
      assert pool.adapter_args == ["--adapter", "myapp.Legacy"]
      assert pool.adapter_env == [{"FOO", "bar"}]
      assert pool.env == @process_env ++ [{"FOO", "bar"}]
      assert pool.startup_batch_size == 2
      assert pool.worker_ttl_ms == 300_000
    end

    test "top-level pool_size wins over pool_config.pool_size" do
      assert [%{pool_size: 7}] = Config.pools(pool_size: 7, pool_config: %{pool_size: 2})
    end

    test "pool_config alone may set the profile and size" do
      env = [pool_config: [worker_profile: :thread, pool_size: 2, threads_per_worker: 4]]
      assert [pool] = Config.pools(env)
      assert {pool.worker_profile, pool.pool_size, pool.capacity_per_worker} == {:thread, 2, 4}
    end

    test "accepts the upstream max_workers option in pool_config; it caps pool_size" do
      assert [pool] = Config.pools(pool_config: %{max_workers: 1000, startup_batch_delay_ms: 750})
      assert pool.startup_batch_delay_ms == 750
      assert pool.max_workers == 1000

      assert [%{pool_size: 3, max_workers: 3}] =
               Config.pools(pool_config: %{pool_size: 8, max_workers: 3})

      assert [%{pool_size: 2}] = Config.pools(pool_size: 8, pool_max_workers: 2)
    end

    test "rejects a non-map pool_config" do
      assert_raise ArgumentError, ~r/:pool_config.*"oops".*map or keyword list/, fn ->
        Config.pools(pool_config: "oops")
      end
    end

    test "drops unknown keys inside pool_config and names them in ignored_keys/1" do
      env = [pool_config: %{pool_size: 2, max_overflow: 2, strategy: :fifo}]
      assert [%{pool_size: 2} = pool] = Config.pools(env)
      refute Map.has_key?(pool, :strategy)

      assert Config.ignored_keys(env) ==
               "Snakepit ignores these configuration keys: " <>
                 "unknown keys in pool :default: :max_overflow, :strategy"
    end
  end

  describe "pools/1 multi-pool and hybrid forms" do
    test "normalises every pool, keeping order" do
      env = [
        pools: [
          %{name: :default, worker_profile: :process, pool_size: 50},
          [name: :ml, worker_profile: :thread, pool_size: 4, threads_per_worker: 16]
        ]
      ]

      assert [default, ml] = Config.pools(env)

      assert default.name == :default
      assert default.worker_profile == :process
      assert default.pool_size == 50
      assert default.capacity_per_worker == 1
      assert default.env == @process_env

      assert ml.name == :ml
      assert ml.worker_profile == :thread
      assert ml.pool_size == 4
      assert ml.threads_per_worker == 16
      assert ml.capacity_per_worker == 16

      assert ml.env == [
               {"OPENBLAS_NUM_THREADS", "16"},
               {"MKL_NUM_THREADS", "16"},
               {"OMP_NUM_THREADS", "16"},
               {"NUMEXPR_NUM_THREADS", "16"}
             ]
    end

    test "the seed's hybrid example keeps each pool's adapter" do
      env = [
        pools: [
          %{name: :default, worker_profile: :process, pool_size: 50},
          %{
            name: :ml,
            worker_profile: :thread,
            pool_size: 4,
            threads_per_worker: 16,
            adapter_args: ["--adapter", "myapp.ml.ModelAdapter"]
          }
        ]
      ]

      assert [%{adapter: @showcase}, %{adapter: "myapp.ml.ModelAdapter"}] = Config.pools(env)
    end

    test "top-level values act as defaults for every pool" do
      env = [
        pool_size: 3,
        affinity: :strict_queue,
        adapter_module: MyApp.Adapter,
        graceful_shutdown_timeout_ms: 100,
        pool_max_queue_size: 5,
        pool_queue_timeout: 250,
        python_executable: "/usr/bin/python3",
        heartbeat: %{ping_interval_ms: 5_000},
        pools: [%{name: :a}, %{name: :b, pool_size: 1, max_queue_size: 9, queue_timeout_ms: 1}]
      ]

      assert [a, b] = Config.pools(env)
      assert {a.pool_size, b.pool_size} == {3, 1}
      assert {a.max_queue_size, b.max_queue_size} == {5, 9}
      assert {a.queue_timeout_ms, b.queue_timeout_ms} == {250, 1}
      assert a.affinity == :strict_queue
      assert a.adapter_module == MyApp.Adapter
      assert a.graceful_shutdown_timeout_ms == 100
      assert a.python_executable == "/usr/bin/python3"
      assert a.heartbeat.ping_interval_ms == 5_000
      assert a.heartbeat.timeout_ms == 10_000
    end

    test "duplicate pool names raise" do
      assert_raise ArgumentError, ~r/duplicate pool name :ml/, fn ->
        Config.pools(pools: [%{name: :ml}, %{name: :other}, %{name: :ml}])
      end
    end

    test "an empty or non-list pools value raises" do
      assert_raise ArgumentError, ~r/:pools.*\[\].*non-empty list of pool maps/, fn ->
        Config.pools(pools: [])
      end

      assert_raise ArgumentError, ~r/:pools.*%\{name: :a\}.*non-empty list/, fn ->
        Config.pools(pools: %{name: :a})
      end
    end
  end

  describe "worker environment" do
    test "process profile: adapter_env wins and other entries pass through" do
      pool =
        Config.normalize_pool(%{
          name: :p,
          adapter_env: [{"OMP_NUM_THREADS", "4"}, {"CUDA_VISIBLE_DEVICES", "0"}]
        })

      assert pool.env == [
               {"OPENBLAS_NUM_THREADS", "1"},
               {"MKL_NUM_THREADS", "1"},
               {"OMP_NUM_THREADS", "4"},
               {"NUMEXPR_NUM_THREADS", "1"},
               {"VECLIB_MAXIMUM_THREADS", "1"},
               {"CUDA_VISIBLE_DEVICES", "0"}
             ]
    end

    test "thread profile: defaults follow threads_per_worker, adapter_env wins" do
      pool =
        Config.normalize_pool(%{
          name: :ml,
          worker_profile: :thread,
          threads_per_worker: 8,
          adapter_env: [
            {"OPENBLAS_NUM_THREADS", "16"},
            {"CUDA_VISIBLE_DEVICES", "0"},
            {"PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512"}
          ]
        })

      assert pool.env == [
               {"OPENBLAS_NUM_THREADS", "16"},
               {"MKL_NUM_THREADS", "8"},
               {"OMP_NUM_THREADS", "8"},
               {"NUMEXPR_NUM_THREADS", "8"},
               {"CUDA_VISIBLE_DEVICES", "0"},
               {"PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512"}
             ]

      refute List.keymember?(pool.env, "VECLIB_MAXIMUM_THREADS", 0)
    end

    test "the last adapter_env entry for a repeated name wins" do
      pool = Config.normalize_pool(%{name: :p, adapter_env: [{"X", "1"}, {"X", "2"}]})
      assert pool.env == @process_env ++ [{"X", "2"}]
    end

    test "adapter_env may be a map or a keyword list" do
      from_map = Config.normalize_pool(%{name: :p, adapter_env: %{"A" => "1", B: "2"}})
      assert Enum.sort(from_map.adapter_env) == [{"A", "1"}, {"B", "2"}]

      from_keyword = Config.normalize_pool(%{name: :p, adapter_env: [MKL_NUM_THREADS: "3"]})
      assert from_keyword.adapter_env == [{"MKL_NUM_THREADS", "3"}]
      assert {"MKL_NUM_THREADS", "3"} in from_keyword.env
    end
  end

  describe "normalize_pool/2" do
    test "merges a partial heartbeat map over the defaults" do
      pool = Config.normalize_pool(%{name: :p, heartbeat: %{enabled: false, timeout_ms: 60_000}})

      assert pool.heartbeat == %{
               enabled: false,
               ping_interval_ms: 2_000,
               timeout_ms: 60_000,
               max_missed_heartbeats: 3,
               initial_delay_ms: 0,
               dependent: true
             }
    end

    test "pool heartbeat merges over the global heartbeat" do
      globals = [heartbeat: [ping_interval_ms: 7_000, max_missed_heartbeats: 5]]
      pool = Config.normalize_pool([name: :p, heartbeat: [max_missed_heartbeats: 2]], globals)
      assert pool.heartbeat.ping_interval_ms == 7_000
      assert pool.heartbeat.max_missed_heartbeats == 2
    end

    test "normalises worker_ttl into milliseconds" do
      ttl_ms = fn ttl -> Config.normalize_pool(%{name: :p, worker_ttl: ttl}).worker_ttl_ms end

      assert ttl_ms.(:infinity) == nil
      assert ttl_ms.({1800, :seconds}) == 1_800_000
      assert ttl_ms.({2, :minutes}) == 120_000
      assert ttl_ms.({1, :hours}) == 3_600_000
    end

    test "keeps explicit lifecycle and session settings" do
      pool =
        Config.normalize_pool(%{
          name: :p,
          worker_max_requests: 10_000,
          thread_safety_checks: true,
          affinity: :strict_fail_fast,
          session_ttl_ms: 1_000,
          restart_backoff_ms: 100,
          max_restart_backoff_ms: 100,
          startup_batch_delay_ms: 0,
          graceful_shutdown_timeout_ms: 0,
          python_executable: "/opt/py/bin/python"
        })

      assert pool.worker_max_requests == 10_000
      assert pool.thread_safety_checks == true
      assert pool.affinity == :strict_fail_fast
      assert pool.session_ttl_ms == 1_000
      assert {pool.restart_backoff_ms, pool.max_restart_backoff_ms} == {100, 100}
      assert pool.startup_batch_delay_ms == 0
      assert pool.graceful_shutdown_timeout_ms == 0
      assert pool.python_executable == "/opt/py/bin/python"
    end

    test "extracts the adapter class from adapter_args" do
      args = ["--verbose", "--adapter", "myapp.A", "--x"]

      assert %{adapter: "myapp.A", adapter_args: ^args} =
               Config.normalize_pool(name: :p, adapter_args: args)

      assert %{adapter: "myapp.B"} =
               Config.normalize_pool(name: :p, adapter_args: ["--adapter=myapp.B"])
    end

    test "adds the default adapter when adapter_args names none" do
      pool = Config.normalize_pool(name: :p, adapter_args: ["--verbose"])
      assert pool.adapter == @showcase
      assert pool.adapter_args == ["--adapter", @showcase, "--verbose"]
    end

    test "adapter_spec picks the adapter when adapter_args names none" do
      pool = Config.normalize_pool(name: :p, adapter_spec: "myapp.Spec")
      assert pool.adapter == "myapp.Spec"
      assert pool.adapter_args == ["--adapter", "myapp.Spec"]
      refute Map.has_key?(pool, :adapter_spec)
    end

    test "is idempotent" do
      pool =
        Config.normalize_pool(%{
          name: :ml,
          worker_profile: :thread,
          threads_per_worker: 4,
          worker_ttl: {1, :hours},
          adapter_env: %{"CUDA_VISIBLE_DEVICES" => "1"}
        })

      assert Config.normalize_pool(pool) == pool
    end
  end

  describe "ignored_keys/1" do
    test "nil when every key is used" do
      assert Config.ignored_keys([]) == nil

      assert Config.ignored_keys(
               pooling_enabled: true,
               pools: [%{name: :a, pool_size: 1, heartbeat: %{"enabled" => true}}],
               timeout_profile: :batch,
               log_level: :error,
               log_categories: [:pool],
               crash_barrier: [enabled: true],
               circuit_breaker_failure_threshold: 3,
               session_default_ttl: 60
             ) == nil
    end

    test "names upstream keys with no meaning here, inert and unknown keys, in one message" do
      env = [
        pooling_enabled: true,
        grpc_listener: %{mode: :internal},
        instance_name: "x",
        grpc_timeout: 60_000,
        heartbeat: %{"ping_interval_ms" => 100, "pings" => 3},
        pools: [
          %{name: :a, capacity_strategy: :hybrid, memory_threshold_mb: 512, bogus: 1},
          %{name: :b, heartbeat: [interval: 5]}
        ]
      ]

      assert Config.ignored_keys(env) ==
               "Snakepit ignores these configuration keys: " <>
                 "upstream keys with no meaning in Snakepit native in the :snakepit config: " <>
                 ":grpc_listener, :instance_name; " <>
                 "unknown keys in the :snakepit config: :grpc_timeout; " <>
                 ~s|unknown heartbeat keys in :heartbeat in the :snakepit config: "pings"; | <>
                 "keys that change nothing here in pool :a: :capacity_strategy, :memory_threshold_mb; " <>
                 "unknown keys in pool :a: :bogus; " <>
                 "unknown heartbeat keys in :heartbeat in pool :b: :interval"

      # ... and none of them stops the pools from normalising.
      assert [%{name: :a, memory_threshold_mb: 512}, %{name: :b}] = Config.pools(env)
    end

    test "an adapter_module other than upstream's GRPCPython adapter changes nothing here" do
      assert Config.ignored_keys(adapter_module: Snakepit.Adapters.GRPCPython) == nil

      assert Config.ignored_keys(
               pools: [%{name: :a, adapter_module: Snakepit.Adapters.GRPCPython}]
             ) == nil

      assert Config.ignored_keys(adapter_module: MyApp.Adapter) ==
               "Snakepit ignores these configuration keys: " <>
                 "keys that change nothing here in the :snakepit config: :adapter_module"

      assert Config.ignored_keys(pools: [%{name: :a, adapter_module: MyApp.Adapter}]) ==
               "Snakepit ignores these configuration keys: " <>
                 "keys that change nothing here in pool :a: :adapter_module"
    end

    test "upstream's showcase and loadtest configs are accepted" do
      showcase = [
        log_level: :error,
        instance_name: "snakepit_showcase",
        adapter_module: Snakepit.Adapters.GRPCPython,
        bootstrap_project_root: "/tmp",
        pooling_enabled: true,
        pool_config: %{
          pool_size: 4,
          max_overflow: 2,
          strategy: :fifo,
          adapter_args: [
            "--adapter",
            "snakepit_bridge.adapters.showcase.showcase_adapter.ShowcaseAdapter"
          ]
        },
        grpc_listener: %{mode: :internal}
      ]

      loadtest = [
        adapter_module: Snakepit.Adapters.GRPCPython,
        instance_name: "snakepit_loadtest",
        pooling_enabled: true,
        grpc_listener: %{mode: :internal},
        grpc_timeout: 60_000,
        python_timeout: 55_000,
        pool_config: %{pool_size: 10, max_overflow: 10}
      ]

      assert [
               %{
                 pool_size: 4,
                 adapter: "snakepit_bridge.adapters.showcase.showcase_adapter.ShowcaseAdapter"
               }
             ] = Config.pools(showcase)

      assert [%{pool_size: 10}] = Config.pools(loadtest)
      assert Config.ignored_keys(showcase) =~ ":max_overflow, :strategy"
      assert Config.ignored_keys(loadtest) =~ ":grpc_timeout, :python_timeout"
    end
  end

  describe "native_config/3" do
    setup do
      [pool] =
        Config.pools(pool_config: %{graceful_shutdown_timeout_ms: 2_000, worker_max_requests: 5})

      native =
        Config.native_config(
          pool,
          "/usr/bin/python3",
          Config.globals(pool_startup_timeout: 1_234)
        )

      %{pool: pool, native: native}
    end

    test "sends the pool under the names users write, with the stream window", %{
      pool: pool,
      native: native
    } do
      assert native.name == "default"
      assert native.python_executable == "/usr/bin/python3"
      assert native.graceful_shutdown_timeout_ms == 2_000
      assert native.worker_max_requests == 5
      assert native.worker_ttl_ms == nil
      assert native.pool_startup_timeout == 1_234
      assert native.max_queue_size == 1_000
      assert native.heartbeat == pool.heartbeat
      assert native.stream_window == 2 * Config.stream_grant()
      # The worker's own grace ends before the pool's.
      assert ["--shutdown-grace-ms", "1500" | _] =
               Enum.drop_while(native.worker_argv, &(&1 != "--shutdown-grace-ms"))

      assert ["--adapter", @showcase | _] =
               Enum.drop_while(native.worker_argv, &(&1 != "--adapter"))

      assert Enum.all?(native.env, &String.contains?(&1, "="))
    end

    test "the native runtime refuses a map without a key, naming it", %{native: native} do
      without_timeout = Map.update!(native, :heartbeat, &Map.delete(&1, :timeout_ms))

      assert {:error, "native pool config: missing or invalid heartbeat.timeout_ms"} =
               Snakepit.Native.pool_start(without_timeout, self())

      assert {:error, "native pool config: missing or invalid stream_window"} =
               Snakepit.Native.pool_start(Map.delete(native, :stream_window), self())
    end
  end

  describe "globals/1" do
    test "defaults" do
      assert Config.globals([]) == %{
               pooling_enabled: false,
               pool_max_queue_size: 1_000,
               pool_queue_timeout: 10_000,
               python_executable: nil,
               log_level: :error,
               timeout_profile: :balanced,
               request_timeout: 300_000,
               stream_timeout: 900_000,
               pool_startup_timeout: 60_000,
               pool_await_ready_timeout: 15_000
             }
    end

    test "each timeout profile sets the call, stream and queue defaults, as upstream's table" do
      expected = %{
        balanced: {300_000, 900_000, 10_000},
        production: {300_000, 900_000, 10_000},
        production_strict: {60_000, 300_000, 5_000},
        development: {900_000, 3_600_000, 60_000},
        ml_inference: {900_000, 3_600_000, 60_000},
        batch: {3_600_000, :infinity, 300_000}
      }

      assert Map.keys(Config.timeout_profiles()) |> Enum.sort() ==
               Map.keys(expected) |> Enum.sort()

      for {profile, {call, stream, queue}} <- expected do
        globals = Config.globals(timeout_profile: profile)
        assert {globals.request_timeout, globals.stream_timeout} == {call, stream}
        assert globals.pool_queue_timeout == queue
        assert [%{queue_timeout_ms: ^queue}] = Config.pools(timeout_profile: profile)
      end
    end

    test "pool_request_timeout, pool_streaming_timeout and pool_queue_timeout win over the profile" do
      env = [
        timeout_profile: :batch,
        pool_request_timeout: 1_000,
        pool_streaming_timeout: :infinity,
        pool_queue_timeout: 50
      ]

      assert %{request_timeout: 1_000, stream_timeout: :infinity, pool_queue_timeout: 50} =
               Config.globals(env)
    end

    test "reads and validates the global settings" do
      env = [
        pool_max_queue_size: 5,
        pool_queue_timeout: 20,
        python_executable: "/usr/bin/python3",
        log_level: :warn
      ]

      assert %{
               pool_max_queue_size: 5,
               pool_queue_timeout: 20,
               python_executable: "/usr/bin/python3",
               log_level: :warning
             } = Config.globals(env)
    end

    test "invalid global values raise naming the key" do
      assert_raise ArgumentError,
                   "invalid value for :pool_max_queue_size in the :snakepit config: 0 (expected a positive integer)",
                   fn -> Config.globals(pool_max_queue_size: 0) end

      assert_raise ArgumentError,
                   ~r/:pool_queue_timeout in the :snakepit config: "10s" \(expected a positive integer\)/,
                   fn -> Config.globals(pool_queue_timeout: "10s") end

      assert_raise ArgumentError,
                   ~r/:python_executable in the :snakepit config: :python3 \(expected nil or a non-empty string\)/,
                   fn -> Config.globals(python_executable: :python3) end

      assert_raise ArgumentError,
                   ~r/:log_level in the :snakepit config: :loud \(expected one of :debug, :info, :warning, :error, :none\)/,
                   fn -> Config.globals(log_level: :loud) end

      assert_raise ArgumentError,
                   ~r/:timeout_profile in the :snakepit config: :fast \(expected one of .*:balanced/,
                   fn -> Config.globals(timeout_profile: :fast) end

      assert_raise ArgumentError,
                   ~r/:pool_request_timeout in the :snakepit config: 0 \(expected a positive integer \(ms\) or :infinity\)/,
                   fn -> Config.globals(pool_request_timeout: 0) end

      assert_raise ArgumentError,
                   ~r/:pooling_enabled in the :snakepit config: "yes" \(expected true or false\)/,
                   fn -> Config.globals(pooling_enabled: "yes") end
    end

    test "invalid global pool defaults raise naming the key" do
      assert_raise ArgumentError,
                   "invalid value for :pool_size in the :snakepit config: 0 (expected a positive integer)",
                   fn -> Config.pools(pool_size: 0, pools: [%{name: :a}]) end
    end
  end

  describe "validation errors" do
    defp assert_invalid(pool, message) do
      assert_raise ArgumentError, message, fn -> Config.normalize_pool(pool) end
    end

    test "positive integer keys" do
      assert_invalid(
        %{name: :ml, pool_size: -1},
        "invalid value for :pool_size in pool :ml: -1 (expected a positive integer)"
      )

      for key <- [
            :threads_per_worker,
            :startup_batch_size,
            :session_ttl_ms,
            :max_queue_size,
            :queue_timeout_ms,
            :restart_backoff_ms
          ] do
        assert_invalid(
          Map.new([{:name, :ml}, {key, 0}]),
          "invalid value for #{inspect(key)} in pool :ml: 0 (expected a positive integer)"
        )
      end
    end

    test "non-negative integer keys" do
      for key <- [:startup_batch_delay_ms, :graceful_shutdown_timeout_ms] do
        assert_invalid(
          Map.new([{:name, :ml}, {key, -5}]),
          "invalid value for #{inspect(key)} in pool :ml: -5 (expected a non-negative integer)"
        )
      end
    end

    test "boolean keys" do
      assert_invalid(
        %{name: :ml, thread_safety_checks: "yes"},
        ~s|invalid value for :thread_safety_checks in pool :ml: "yes" (expected true or false)|
      )
    end

    test "enumerated keys" do
      assert_invalid(
        %{name: :ml, worker_profile: :fiber},
        "invalid value for :worker_profile in pool :ml: :fiber (expected one of :process, :thread)"
      )

      assert_invalid(
        %{name: :ml, affinity: :sticky},
        "invalid value for :affinity in pool :ml: :sticky " <>
          "(expected one of :hint, :strict_queue, :strict_fail_fast (or the same as a string))"
      )

      assert_invalid(
        %{name: :ml, affinity: "sticky"},
        ~s|invalid value for :affinity in pool :ml: "sticky" | <>
          "(expected one of :hint, :strict_queue, :strict_fail_fast (or the same as a string))"
      )

      assert_invalid(
        %{name: :ml, capacity_strategy: :greedy},
        "invalid value for :capacity_strategy in pool :ml: :greedy " <>
          "(expected one of :pool, :profile, :hybrid)"
      )

      assert_invalid(
        %{name: :ml, max_workers: 0},
        "invalid value for :max_workers in pool :ml: 0 (expected a positive integer)"
      )
    end

    test "affinity as a case-insensitive string, as upstream accepts it" do
      assert %{affinity: :strict_queue} =
               Config.normalize_pool(%{name: :ml, affinity: "Strict_Queue"})

      assert [%{affinity: :strict_fail_fast}] = Config.pools(affinity: "STRICT_FAIL_FAST")
    end

    test "adapter_module must be an atom" do
      assert_invalid(
        %{name: :ml, adapter_module: "Snakepit.Adapters.GRPCPython"},
        ~s(invalid value for :adapter_module in pool :ml: "Snakepit.Adapters.GRPCPython" ) <>
          "(expected nil or a module name (an atom))"
      )
    end

    test "adapter_args must be a list of strings naming an adapter when --adapter is given" do
      assert_invalid(
        %{name: :ml, adapter_args: ["--adapter", :foo]},
        ~s|invalid value for :adapter_args in pool :ml: ["--adapter", :foo] (expected a list of strings)|
      )

      assert_invalid(
        %{name: :ml, adapter_args: ["--adapter"]},
        ~s(invalid value for :adapter_args in pool :ml: ["--adapter"] ) <>
          ~s[(expected "--adapter" followed by a Python class path)]
      )
    end

    test "adapter_spec must agree with adapter_args" do
      assert_raise ArgumentError, ~r/:adapter_spec in pool :ml: "b\.B".*"a\.A"/, fn ->
        Config.normalize_pool(name: :ml, adapter_args: ["--adapter", "a.A"], adapter_spec: "b.B")
      end
    end

    test "adapter_env entries must be string pairs" do
      assert_raise ArgumentError,
                   ~r/invalid value for :adapter_env in pool :ml: \[\{"OMP_NUM_THREADS", 4\}\] \(expected a list of \{"NAME", "value"\} string pairs/,
                   fn ->
                     Config.normalize_pool(name: :ml, adapter_env: [{"OMP_NUM_THREADS", 4}])
                   end

      assert_raise ArgumentError, ~r/:adapter_env in pool :ml: \[\{"A=B", "1"\}\]/, fn ->
        Config.normalize_pool(name: :ml, adapter_env: [{"A=B", "1"}])
      end

      assert_raise ArgumentError, ~r/:adapter_env in pool :ml: "OMP=1"/, fn ->
        Config.normalize_pool(name: :ml, adapter_env: "OMP=1")
      end
    end

    test "worker_ttl" do
      for ttl <- [{0, :seconds}, {5, :days}, 60, {1.5, :hours}] do
        assert_invalid(
          %{name: :ml, worker_ttl: ttl},
          "invalid value for :worker_ttl in pool :ml: #{inspect(ttl)} " <>
            "(expected :infinity or {n, :seconds | :minutes | :hours} with n a positive integer)"
        )
      end
    end

    test "worker_max_requests" do
      assert_invalid(
        %{name: :ml, worker_max_requests: 0},
        "invalid value for :worker_max_requests in pool :ml: 0 " <>
          "(expected :infinity or a positive integer)"
      )
    end

    test "python_executable" do
      assert_invalid(
        %{name: :ml, python_executable: ""},
        ~s|invalid value for :python_executable in pool :ml: "" (expected nil or a non-empty string)|
      )
    end

    test "max_restart_backoff_ms below restart_backoff_ms" do
      assert_invalid(
        %{name: :ml, restart_backoff_ms: 1_000, max_restart_backoff_ms: 10},
        "invalid value for :max_restart_backoff_ms in pool :ml: 10 " <>
          "(expected an integer >= :restart_backoff_ms (1000))"
      )
    end

    test "heartbeat values and keys" do
      assert_invalid(
        %{name: :ml, heartbeat: %{ping_interval_ms: 0}},
        "invalid value for :ping_interval_ms in :heartbeat in pool :ml: 0 " <>
          "(expected a positive integer)"
      )

      assert_invalid(
        %{name: :ml, heartbeat: %{enabled: "on"}},
        ~s|invalid value for :enabled in :heartbeat in pool :ml: "on" (expected true or false)|
      )

      # Unknown heartbeat keys are dropped (and named at boot), string keys work.
      assert %{heartbeat: %{ping_interval_ms: 500, enabled: false}} =
               Config.normalize_pool(%{
                 name: :ml,
                 heartbeat: %{"ping_interval_ms" => 500, "enabled" => false, interval: 1}
               })

      assert_invalid(
        %{name: :ml, heartbeat: %{"timeout_ms" => -1}},
        "invalid value for :timeout_ms in :heartbeat in pool :ml: -1 (expected a positive integer)"
      )

      assert_invalid(
        %{name: :ml, heartbeat: true},
        "invalid value for :heartbeat in pool :ml: true " <>
          "(expected a map or keyword list of heartbeat options)"
      )
    end

    test "unknown pool keys are dropped" do
      pool = Config.normalize_pool(%{name: :ml, pool_sise: 4, pool_size: 3})
      assert pool.pool_size == 3
      refute Map.has_key?(pool, :pool_sise)
    end

    test "missing or invalid name" do
      assert_raise ArgumentError,
                   ~r/missing required key :name in pool config %\{pool_size: 2\}/,
                   fn ->
                     Config.normalize_pool(%{pool_size: 2})
                   end

      assert_invalid(
        %{name: "ml"},
        ~s|invalid value for :name in pool config: "ml" (expected an atom such as :default)|
      )

      assert_invalid(
        %{name: nil},
        "invalid value for :name in pool config: nil (expected an atom such as :default)"
      )
    end

    test "a pool that is not a map or keyword list" do
      assert_invalid(
        "ml",
        ~s|invalid pool config: "ml" (expected a map or keyword list)|
      )
    end

    test "derived keys must match their derived value" do
      assert_raise ArgumentError,
                   ~r/invalid value for :capacity_per_worker in pool :ml: 4 \(expected 1, derived from :worker_profile and :threads_per_worker/,
                   fn -> Config.normalize_pool(%{name: :ml, capacity_per_worker: 4}) end

      assert_raise ArgumentError,
                   ~r/invalid value for :env in pool :ml: \[\].*set those instead/,
                   fn ->
                     Config.normalize_pool(%{name: :ml, env: []})
                   end
    end
  end
end
