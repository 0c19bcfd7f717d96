defmodule Snakepit.Config do
  @moduledoc """
  Reads, normalises and validates Snakepit's application configuration.

  `pools/1`, `normalize_pool/2`, `globals/1` and `ignored_keys/1` are pure:
  they take the `:snakepit` application environment (for example
  `Application.get_all_env(:snakepit)`) and return plain maps, raising
  `ArgumentError` on any invalid value. The error message names the key,
  shows the offending value and says what is allowed. Upstream's API
  (`get_pool_configs/0`, `get_pool_config/1`, `validate_pool_config/1`,
  `normalize_pool_config/1`, `grpc_listener_config/0`, ...) reads the
  application environment itself.

  Keys Snakepit native does not use (upstream's gRPC listener, instance and
  process-registry settings, `capacity_strategy`, `memory_threshold_mb`, an
  `adapter_module` other than upstream's `Snakepit.Adapters.GRPCPython`,
  which is what every pool here is (the Python class is `--adapter` in
  `:adapter_args`), unknown keys) never stop the boot: the application names them in one
  warning (`ignored_keys/1`).

  ## Pool forms

    * multi-pool: `pools: [%{name: :default, ...}, %{name: :ml, ...}]`
      (each pool a map or keyword list);
    * legacy single pool: no `:pools` key; the top-level `:pool_size`,
      `:pool_config` (merged in), `:adapter_module`, `:adapter_args` and
      `:adapter_env` become one pool named `:default`. With none of them set
      this is simply the default pool.

  ## Global defaults

  Top-level `:pool_size`, `:adapter_module`, `:affinity`,
  `:capacity_strategy`, `:graceful_shutdown_timeout_ms` and `:heartbeat` act
  as defaults for every pool, as do `:default_pool_size` (per pool
  `:pool_size`), `:pool_startup_batch_size`, `:pool_startup_batch_delay_ms`,
  `:pool_max_workers` (per pool `:max_workers`, 150, which caps
  `:pool_size`), `:pool_max_queue_size` (per pool `:max_queue_size`),
  `:pool_queue_timeout` (per pool `:queue_timeout_ms`; default from
  `:timeout_profile`) and `:python_executable`. `:affinity` may be an atom
  or a case-insensitive string; `:heartbeat` keys atoms or strings.

  ## Cluster scope

  A pool's `:scope` is `:local` (the default: it serves this node's calls
  only) or `:cluster`: calls to it are routed over every node that runs a
  pool of that name with `scope: :cluster` (see `Snakepit.Cluster`). Only a
  clustered pool may have `pool_size: 0`, which makes this node route-only
  (no Python here). The optional top-level `:cluster` keyword tunes the
  routing; `Snakepit.Cluster` documents and validates it.

  ## Derived keys

  Every normalised pool also carries `:capacity_per_worker`, `:adapter` (the
  Python class passed after `--adapter`), `:env` (the final worker
  environment) and `:worker_ttl_ms`. They may appear in the input (so a
  normalised pool can be normalised again) but must then equal the derived
  value.
  """

  # Upstream's Elixir adapter for Python over gRPC: what every pool here is,
  # so naming it changes nothing and is not worth a warning.
  @grpc_python_adapter Snakepit.Adapters.GRPCPython
  @default_adapter "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
  @global_ctx "in the :snakepit config"

  @profiles [:process, :thread]
  @affinities [:hint, :strict_queue, :strict_fail_fast]
  @log_levels [:debug, :info, :warning, :error, :none]
  @ttl_unit_ms %{seconds: 1_000, minutes: 60_000, hours: 3_600_000}

  @thread_env_vars [
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_NUM_THREADS",
    "NUMEXPR_NUM_THREADS"
  ]
  @process_env_vars @thread_env_vars ++ ["VECLIB_MAXIMUM_THREADS"]

  @heartbeat_defaults %{
    enabled: true,
    ping_interval_ms: 2_000,
    timeout_ms: 10_000,
    max_missed_heartbeats: 3,
    initial_delay_ms: 0,
    dependent: true
  }

  @heartbeat_fields [
    enabled: :boolean,
    ping_interval_ms: :pos_integer,
    timeout_ms: :pos_integer,
    max_missed_heartbeats: :pos_integer,
    initial_delay_ms: :non_neg_integer,
    dependent: :boolean
  ]

  # Pool keys validated one by one; `:name` and `:heartbeat` are handled apart.
  @pool_fields [
    worker_profile: {:one_of, @profiles},
    pool_size: :pos_integer,
    threads_per_worker: :pos_integer,
    adapter_module: :optional_module,
    adapter_args: :string_list,
    adapter_spec: :optional_string,
    adapter_env: :env,
    startup_batch_size: :pos_integer,
    startup_batch_delay_ms: :non_neg_integer,
    thread_safety_checks: :boolean,
    worker_ttl: :ttl,
    worker_max_requests: :max_requests,
    graceful_shutdown_timeout_ms: :non_neg_integer,
    affinity: :affinity,
    capacity_strategy: {:one_of, [:pool, :profile, :hybrid]},
    max_workers: :pos_integer,
    memory_threshold_mb: :optional_pos_integer,
    session_ttl_ms: :pos_integer,
    tool_overrun_grace_ms: :non_neg_integer,
    max_queue_size: :pos_integer,
    queue_timeout_ms: :pos_integer,
    python_executable: :optional_string,
    restart_backoff_ms: :pos_integer,
    max_restart_backoff_ms: :pos_integer,
    scope: {:one_of, [:local, :cluster]}
  ]

  @static_defaults %{
    worker_profile: :process,
    threads_per_worker: 10,
    adapter_module: nil,
    adapter_args: [],
    adapter_spec: nil,
    adapter_env: [],
    startup_batch_size: 10,
    startup_batch_delay_ms: 500,
    thread_safety_checks: false,
    worker_ttl: :infinity,
    worker_max_requests: :infinity,
    graceful_shutdown_timeout_ms: 6_000,
    affinity: :hint,
    capacity_strategy: :pool,
    memory_threshold_mb: nil,
    session_ttl_ms: 3_600_000,
    tool_overrun_grace_ms: 5_000,
    restart_backoff_ms: 500,
    max_restart_backoff_ms: 10_000,
    scope: :local
  }

  # Top-level keys that set a pool default of the same name.
  @global_pool_defaults [
    :pool_size,
    :adapter_module,
    :affinity,
    :graceful_shutdown_timeout_ms,
    :capacity_strategy
  ]
  # Top-level keys (upstream's names) that set the default of a pool key.
  @renamed_pool_defaults [
    default_pool_size: :pool_size,
    pool_startup_batch_size: :startup_batch_size,
    pool_startup_batch_delay_ms: :startup_batch_delay_ms,
    pool_max_workers: :max_workers
  ]

  # Pool keys that are validated and kept but change nothing here: the
  # native scheduler is always load-aware, and worker memory is not watched.
  @inert_pool_keys [:capacity_strategy, :memory_threshold_mb]

  # Upstream's timeout profiles (lib/snakepit/defaults.ex), in ms.
  @timeout_profiles %{
    balanced: %{default_timeout: 300_000, stream_timeout: 900_000, queue_timeout: 10_000},
    production: %{default_timeout: 300_000, stream_timeout: 900_000, queue_timeout: 10_000},
    production_strict: %{default_timeout: 60_000, stream_timeout: 300_000, queue_timeout: 5_000},
    development: %{default_timeout: 900_000, stream_timeout: 3_600_000, queue_timeout: 60_000},
    ml_inference: %{default_timeout: 900_000, stream_timeout: 3_600_000, queue_timeout: 60_000},
    batch: %{default_timeout: 3_600_000, stream_timeout: :infinity, queue_timeout: 300_000}
  }

  # Global keys read by this module (validated by globals/1 and pools/1).
  @global_keys [
    :pooling_enabled,
    :pools,
    :pool_config,
    :pool_size,
    :adapter_module,
    :adapter_args,
    :adapter_env,
    :affinity,
    :capacity_strategy,
    :graceful_shutdown_timeout_ms,
    :heartbeat,
    :pool_max_queue_size,
    :pool_queue_timeout,
    :pool_max_workers,
    :timeout_profile,
    :pool_request_timeout,
    :pool_streaming_timeout,
    :pool_startup_timeout,
    :pool_await_ready_timeout,
    :pool_startup_batch_size,
    :pool_startup_batch_delay_ms,
    :default_pool_size,
    :python_executable,
    :log_level
  ]

  # Global keys other parts of Snakepit read (fault tolerance, sessions, the
  # interpreter, log categories): accepted here without a word.
  @owned_elsewhere [
    :cluster,
    :log_categories,
    :python_runtime,
    :python,
    :crash_barrier,
    :session_store
  ]
  @owned_prefixes ["crash_barrier_", "circuit_breaker_", "retry_", "health_monitor_", "session_"]

  # Upstream keys for machinery Snakepit native does not have (the Elixir
  # gRPC listener, the DETS process registry, instance isolation, Elixir-side
  # worker supervision and its timeouts): accepted, named in the boot warning.
  @no_meaning_here [
    :grpc_listener,
    :grpc_port,
    :grpc_host,
    :grpc_internal_host,
    :grpc_listener_ready_timeout_ms,
    :grpc_listener_port_check_interval_ms,
    :grpc_listener_reuse_attempts,
    :grpc_listener_reuse_wait_timeout_ms,
    :grpc_listener_reuse_retry_delay_ms,
    :grpc_max_connections,
    :grpc_num_acceptors,
    :grpc_socket_backlog,
    :grpc_port_pool_size,
    :grpc_request_logging,
    :grpc_server_ready_timeout,
    :grpc_stream_open_timeout_ms,
    :grpc_stream_control_timeout_ms,
    :grpc_worker_execute_timeout,
    :grpc_worker_stream_timeout,
    :grpc_worker_health_check_interval,
    :grpc_worker_health_check_timeout_ms,
    :grpc_client_execute_timeout,
    :grpc_command_timeout,
    :grpc_batch_inference_timeout,
    :grpc_large_dataset_timeout,
    :instance_name,
    :instance_token,
    :data_dir,
    :rogue_cleanup,
    :rogue_cleanup_run_markers,
    :process_group_kill,
    :process_registry_cleanup_interval,
    :process_registry_dets_flush_interval_ms,
    :process_registry_unregister_cleanup_attempts,
    :process_registry_unregister_cleanup_delay,
    :cleanup_on_stop,
    :cleanup_on_stop_timeout_ms,
    :cleanup_poll_interval_ms,
    :cleanup_retry_interval_ms,
    :cleanup_max_retries,
    :checkout_timeout,
    :default_command_timeout,
    :worker_call_margin_ms,
    :pool_reply_margin_ms,
    :pool_max_cancelled_entries,
    :pool_cancelled_retention_multiplier,
    :worker_ready_timeout,
    :lifecycle_check_interval,
    :lifecycle_check_max_concurrency,
    :lifecycle_health_check_interval,
    :lifecycle_worker_action_timeout_ms,
    :heartbeat_ping_interval_ms,
    :heartbeat_timeout_ms,
    :heartbeat_max_missed,
    :heartbeat_initial_delay_ms,
    :affinity_cache_ttl_seconds,
    :default_capacity_strategy,
    :default_worker_profile,
    :config_default_batch_delay,
    :config_default_batch_size,
    :config_default_threads_per_worker,
    :executor_batch_timeout,
    :shutdown_margin_ms,
    :log_python_output,
    :library_mode,
    :test_mode,
    :environment,
    :enable_otlp,
    :telemetry_log_level,
    :telemetry_metrics,
    :auto_install_python_deps,
    :require_python_313,
    :bootstrap_project_root,
    :bootstrap_runner,
    :env_doctor_module,
    :env_doctor_runner
  ]
  @legacy_keys [:pool_size, :adapter_module, :adapter_args, :adapter_env]

  @derived_from %{
    adapter: ":adapter_args / :adapter_spec",
    capacity_per_worker: ":worker_profile and :threads_per_worker",
    env: ":worker_profile, :threads_per_worker and :adapter_env",
    worker_ttl_ms: ":worker_ttl"
  }

  @user_keys [:name, :heartbeat | Keyword.keys(@pool_fields)]
  @allowed_keys @user_keys ++ Map.keys(@derived_from)

  @typedoc "Worker execution model."
  @type worker_profile :: :process | :thread

  @typedoc "Maximum worker lifetime."
  @type worker_ttl :: :infinity | {pos_integer(), :seconds | :minutes | :hours}

  @type heartbeat :: %{
          enabled: boolean(),
          ping_interval_ms: pos_integer(),
          timeout_ms: pos_integer(),
          max_missed_heartbeats: pos_integer(),
          initial_delay_ms: non_neg_integer(),
          dependent: boolean()
        }

  @typedoc "A normalised, validated pool; every key is present."
  @type pool_config :: %{
          name: atom(),
          worker_profile: worker_profile(),
          pool_size: pos_integer(),
          threads_per_worker: pos_integer(),
          capacity_per_worker: pos_integer(),
          adapter_module: module() | nil,
          adapter_args: [String.t()],
          adapter: String.t(),
          adapter_env: [{String.t(), String.t()}],
          env: [{String.t(), String.t()}],
          startup_batch_size: pos_integer(),
          startup_batch_delay_ms: non_neg_integer(),
          heartbeat: heartbeat(),
          thread_safety_checks: boolean(),
          worker_ttl: worker_ttl(),
          worker_ttl_ms: pos_integer() | nil,
          worker_max_requests: :infinity | pos_integer(),
          graceful_shutdown_timeout_ms: non_neg_integer(),
          affinity: :hint | :strict_queue | :strict_fail_fast,
          capacity_strategy: :pool | :profile | :hybrid,
          max_workers: pos_integer(),
          memory_threshold_mb: pos_integer() | nil,
          session_ttl_ms: pos_integer(),
          tool_overrun_grace_ms: non_neg_integer(),
          max_queue_size: pos_integer(),
          queue_timeout_ms: pos_integer(),
          python_executable: String.t() | nil,
          restart_backoff_ms: pos_integer(),
          max_restart_backoff_ms: pos_integer(),
          scope: :local | :cluster
        }

  @type globals :: %{
          pooling_enabled: boolean(),
          pool_max_queue_size: pos_integer(),
          pool_queue_timeout: pos_integer(),
          python_executable: String.t() | nil,
          log_level: :debug | :info | :warning | :error | :none,
          timeout_profile: atom(),
          request_timeout: timeout(),
          stream_timeout: timeout(),
          pool_startup_timeout: pos_integer(),
          pool_await_ready_timeout: timeout()
        }

  # The pool keys the native runtime reads as they are (native_config/3).
  @native_pool_keys [
    :pool_size,
    :capacity_per_worker,
    :startup_batch_size,
    :startup_batch_delay_ms,
    :max_queue_size,
    :queue_timeout_ms,
    :restart_backoff_ms,
    :max_restart_backoff_ms,
    :graceful_shutdown_timeout_ms,
    :heartbeat,
    :worker_ttl_ms,
    :worker_max_requests,
    :session_ttl_ms,
    :tool_overrun_grace_ms
  ]
  # Stream chunks read ahead of the consumer (native_config/3, stream_grant/0).
  @stream_window 32
  # A worker stops taking new work this long before the pool's own grace ends.
  @worker_grace_margin_ms 500

  @doc "The Python adapter class used when a pool names none."
  @spec default_adapter() :: String.t()
  def default_adapter, do: @default_adapter

  @doc """
  Returns the normalised pools described by the application environment.

  Raises `ArgumentError` on invalid values, a missing `:name` or duplicate
  pool names (unknown keys are dropped, see `ignored_keys/1`). With no pool configuration at all the result is
  a single default pool named `:default`.
  """
  @spec pools(keyword()) :: [pool_config()]
  def pools(env) when is_list(env) do
    case Keyword.get(env, :pools) do
      nil ->
        [legacy_pool(env)]

      [_ | _] = pools ->
        pools |> Enum.map(&normalize_pool(&1, env)) |> unique_names!()

      other ->
        raise ArgumentError,
              invalid_message(:pools, other, "a non-empty list of pool maps", @global_ctx)
    end
  end

  @doc """
  Normalises and validates one pool given as a map or keyword list.

  `globals` is the application environment, used for defaults (see the
  module documentation). Keys it does not know are dropped; the application
  names them in one warning at boot (see `ignored_keys/1`).
  """
  @spec normalize_pool(map() | keyword(), keyword()) :: pool_config()
  def normalize_pool(pool, globals \\ []) when is_list(globals) do
    attrs = attrs!(pool, "invalid pool config")
    name = name!(attrs)
    ctx = "in pool #{inspect(name)}"
    attrs = Map.take(attrs, @allowed_keys)

    defaults = pool_defaults(globals)

    values =
      attrs
      |> pool_fields()
      |> Map.new(fn {key, kind} ->
        {key, attrs |> Map.get(key, Map.fetch!(defaults, key)) |> value!(kind, key, ctx)}
      end)

    heartbeat = Map.merge(defaults.heartbeat, heartbeat!(Map.get(attrs, :heartbeat, %{}), ctx))

    values
    |> build(name, heartbeat, ctx)
    |> check_derived!(attrs, ctx)
  end

  # A clustered pool may have no workers here: a route-only node.
  defp pool_fields(%{scope: :cluster}),
    do: Keyword.put(@pool_fields, :pool_size, :non_neg_integer)

  defp pool_fields(_attrs), do: @pool_fields

  @doc """
  Returns the validated global settings.

  `:pooling_enabled` defaults to `false` (no pool starts, as upstream),
  `:pool_max_queue_size` to 1000, `:pool_queue_timeout` to the timeout
  profile's queue timeout (10_000 ms for `:balanced`), `:python_executable`
  to `nil`, `:pool_startup_timeout` (per worker start) to 60_000 ms,
  `:pool_await_ready_timeout` to 15_000 ms and `:log_level` to `:error`.

  `:log_level` is the lowest level of Snakepit's own log lines, worker
  output included (`:none` silences them; `:warn` is accepted as
  `:warning`). `:request_timeout` and `:stream_timeout` are the default
  `timeout:` of calls and of streams: `:pool_request_timeout` and
  `:pool_streaming_timeout` when set, else those of `:timeout_profile`
  (default `:balanced`, see `timeout_profiles/0`).
  """
  @spec globals(keyword()) :: globals()
  def globals(env) when is_list(env) do
    profile = global!(env, :timeout_profile, :balanced, {:one_of, Map.keys(@timeout_profiles)})
    timeouts = Map.fetch!(@timeout_profiles, profile)

    %{
      pooling_enabled: global!(env, :pooling_enabled, false, :boolean),
      pool_max_queue_size: global!(env, :pool_max_queue_size, 1_000, :pos_integer),
      pool_queue_timeout: global!(env, :pool_queue_timeout, timeouts.queue_timeout, :pos_integer),
      python_executable: global!(env, :python_executable, nil, :optional_string),
      log_level: global!(env, :log_level, :error, :log_level),
      timeout_profile: profile,
      request_timeout: global!(env, :pool_request_timeout, timeouts.default_timeout, :timeout),
      stream_timeout: global!(env, :pool_streaming_timeout, timeouts.stream_timeout, :timeout),
      pool_startup_timeout: global!(env, :pool_startup_timeout, 60_000, :pos_integer),
      pool_await_ready_timeout: global!(env, :pool_await_ready_timeout, 15_000, :timeout)
    }
  end

  @doc """
  The map a pool's native runtime starts from (`Snakepit.Native.pool_start/2`,
  read by `c_src/nif/pool_config.cpp`): every value it uses, under the names
  users write, from the normalised `pool`, the `globals/1` of the
  application environment and the resolved `python_executable` path.

  Besides the pool's own keys it holds `:pool_startup_timeout` (from the
  globals), the worker's command line after the interpreter
  (`:worker_argv`; the runtime appends the per-worker `--socket`,
  `--worker-id`, `--snakepit-run-id` and its fds), its complete environment
  as `NAME=value` strings (`:env`), the working directory and
  `:stream_window`, the chunks a stream reads ahead of its consumer (see
  `stream_grant/0`).
  """
  @spec native_config(pool_config(), String.t(), globals()) :: map()
  def native_config(pool, python_executable, globals) do
    pool
    |> Map.take(@native_pool_keys)
    |> Map.merge(%{
      name: Atom.to_string(pool.name),
      python_executable: python_executable,
      worker_argv: worker_argv(pool),
      env: pool.env |> python_log_level(globals.log_level) |> Snakepit.Python.worker_env(),
      working_dir: File.cwd!(),
      pool_startup_timeout: globals.pool_startup_timeout,
      stream_window: @stream_window
    })
  end

  @doc """
  How many stream chunks a consumer grants back to the native reader at a
  time: half the window `native_config/3` sends, so the reader never waits
  while the caller's mailbox holds at most a window of chunks.
  """
  @spec stream_grant() :: pos_integer()
  def stream_grant, do: div(@stream_window, 2)

  defp worker_argv(pool) do
    profile = [
      "--profile",
      Atom.to_string(pool.worker_profile),
      "--threads",
      Integer.to_string(pool.capacity_per_worker)
    ]

    checks = if pool.thread_safety_checks, do: ["--thread-safety-checks"], else: []
    # In-flight calls may finish after SIGTERM, within the pool's own grace.
    grace_ms = max(pool.graceful_shutdown_timeout_ms - @worker_grace_margin_ms, 0)
    grace = ["--shutdown-grace-ms", Integer.to_string(grace_ms)]
    # Lets the boot-time sweep of another BEAM tell our live workers from orphans.
    owner = ["--snakepit-owner-pid", System.pid()]
    # Names the pool in the worker's telemetry metadata.
    name = ["--pool-name", Atom.to_string(pool.name)]

    ["-u", Path.join(Snakepit.Python.bridge_dir(), "grpc_server.py")] ++
      pool.adapter_args ++ profile ++ grace ++ owner ++ name ++ checks
  end

  # Records below Snakepit's log floor would be dropped here anyway; the
  # worker's logging need not format and write them. An explicit
  # SNAKEPIT_LOG_LEVEL (adapter_env or this BEAM's environment) wins.
  defp python_log_level(env, floor) do
    level =
      case floor do
        :none -> "CRITICAL"
        :warning -> "WARNING"
        other -> other |> Atom.to_string() |> String.upcase()
      end

    if List.keymember?(env, "SNAKEPIT_LOG_LEVEL", 0) or System.get_env("SNAKEPIT_LOG_LEVEL"),
      do: env,
      else: [{"SNAKEPIT_LOG_LEVEL", level} | env]
  end

  @doc """
  Upstream's timeout profiles (`config :snakepit, timeout_profile: name`):
  per profile the default `timeout:` of a call (`default_timeout`), of a
  stream (`stream_timeout`) and the queue timeout (`queue_timeout`), in ms.
  """
  @spec timeout_profiles() :: %{atom() => %{atom() => timeout()}}
  def timeout_profiles, do: @timeout_profiles

  @doc """
  The configuration keys Snakepit native accepts but does not use, as one
  message naming them, or `nil` when there are none: upstream keys for
  machinery it does not have (the Elixir gRPC listener, ...), pool keys that
  change nothing here, and unknown keys, globally, per pool and in
  `:heartbeat`. The application logs it once at boot; such keys never stop
  the boot.
  """
  @spec ignored_keys(keyword()) :: String.t() | nil
  def ignored_keys(env) when is_list(env) do
    {no_meaning, unknown} =
      env
      |> Keyword.keys()
      |> Enum.reject(&(&1 in @global_keys or &1 in @owned_elsewhere or owned_prefix?(&1)))
      |> Enum.split_with(&(&1 in @no_meaning_here))

    parts =
      [
        keys_part("upstream keys with no meaning in Snakepit native", no_meaning, @global_ctx),
        keys_part("unknown keys", unknown, @global_ctx),
        keys_part("keys that change nothing here", global_inert_keys(env), @global_ctx),
        heartbeat_ignored(Keyword.get(env, :heartbeat), @global_ctx)
      ] ++ Enum.flat_map(pool_inputs(env), &pool_ignored/1)

    case Enum.reject(parts, &is_nil/1) do
      [] -> nil
      parts -> "Snakepit ignores these configuration keys: " <> Enum.join(parts, "; ")
    end
  end

  defp owned_prefix?(key) do
    text = Atom.to_string(key)
    Enum.any?(@owned_prefixes, &String.starts_with?(text, &1))
  end

  defp pool_inputs(env) do
    case Keyword.get(env, :pools) do
      [_ | _] = pools ->
        pools

      _ ->
        case Keyword.get(env, :pool_config) do
          nil -> []
          config -> [config |> loose_attrs() |> Map.put(:name, :default)]
        end
    end
  end

  # For naming keys only: anything that is not a map or keyword list has none.
  defp loose_attrs(value) when is_map(value) and not is_struct(value), do: value

  defp loose_attrs(value) when is_list(value),
    do: if(Keyword.keyword?(value), do: Map.new(value), else: %{})

  defp loose_attrs(_value), do: %{}

  defp pool_ignored(pool) do
    attrs = loose_attrs(pool)
    ctx = "in pool #{inspect(Map.get(attrs, :name))}"
    keys = Map.keys(attrs)

    [
      keys_part("keys that change nothing here", inert_keys(attrs), ctx),
      keys_part("unknown keys", Enum.reject(keys, &(&1 in @allowed_keys)), ctx),
      heartbeat_ignored(Map.get(attrs, :heartbeat), ctx)
    ]
  end

  defp global_inert_keys(env) do
    env |> Keyword.take([:adapter_module]) |> Map.new() |> inert_keys()
  end

  defp inert_keys(attrs) do
    inert = Enum.filter(Map.keys(attrs), &(&1 in @inert_pool_keys))

    case Map.get(attrs, :adapter_module) do
      module when module in [nil, @grpc_python_adapter] -> inert
      _other -> [:adapter_module | inert]
    end
  end

  defp heartbeat_ignored(nil, _ctx), do: nil

  defp heartbeat_ignored(heartbeat, ctx) do
    known = Keyword.keys(@heartbeat_fields)

    unknown =
      heartbeat |> loose_attrs() |> Map.keys() |> Enum.reject(&(heartbeat_key(&1) in known))

    keys_part("unknown heartbeat keys", unknown, "in :heartbeat " <> ctx)
  end

  defp keys_part(_label, [], _ctx), do: nil

  defp keys_part(label, keys, ctx),
    do: "#{label} #{ctx}: " <> (keys |> Enum.sort() |> Enum.map_join(", ", &inspect/1))

  ## Upstream's Snakepit.Config API

  @doc """
  The normalised pools of the `:snakepit` application environment:
  `{:ok, pools}` or `{:error, {:invalid_config, message}}`.
  """
  @spec get_pool_configs() :: {:ok, [pool_config()]} | {:error, {:invalid_config, String.t()}}
  def get_pool_configs do
    {:ok, pools(Application.get_all_env(:snakepit))}
  rescue
    error in ArgumentError -> {:error, {:invalid_config, Exception.message(error)}}
  end

  @doc """
  The normalised pool named `pool_name`: `{:ok, pool}`, `{:error,
  :pool_not_found}`, or the error of `get_pool_configs/0`.
  """
  @spec get_pool_config(atom()) :: {:ok, pool_config()} | {:error, term()}
  def get_pool_config(pool_name) when is_atom(pool_name) do
    with {:ok, pools} <- get_pool_configs() do
      case Enum.find(pools, &(&1.name == pool_name)) do
        nil -> {:error, :pool_not_found}
        pool -> {:ok, pool}
      end
    end
  end

  @doc """
  Validates and normalises one pool map (defaults from the application
  environment): `{:ok, pool}` or `{:error, {:invalid_pool_config, reason}}`
  where `reason` is the message naming the key, the value and what is allowed.
  """
  @spec validate_pool_config(term()) ::
          {:ok, pool_config()} | {:error, {:invalid_pool_config, term()}}
  def validate_pool_config(config) when is_map(config) do
    {:ok, normalize_pool_config(config)}
  rescue
    error in ArgumentError -> {:error, {:invalid_pool_config, Exception.message(error)}}
  end

  def validate_pool_config(invalid), do: {:error, {:invalid_pool_config, invalid}}

  @doc """
  Normalises one pool map, every default filled in from the application
  environment; raises `ArgumentError` on an invalid value.
  """
  @spec normalize_pool_config(map() | keyword()) :: pool_config()
  def normalize_pool_config(config),
    do: normalize_pool(config, Application.get_all_env(:snakepit))

  @doc "Whether a pool config uses the thread profile."
  @spec thread_profile?(map()) :: boolean()
  def thread_profile?(config) when is_map(config), do: Map.get(config, :worker_profile) == :thread

  @doc "Whether the application environment lists its pools under `:pools`."
  @spec multi_pool_mode?() :: boolean()
  def multi_pool_mode?, do: is_list(Application.get_env(:snakepit, :pools))

  @doc """
  The heartbeat settings every pool starts from: the defaults with the
  global `:heartbeat` config (atom or string keys) merged over them.
  """
  @spec heartbeat_defaults() :: heartbeat()
  def heartbeat_defaults do
    case Application.get_env(:snakepit, :heartbeat) do
      nil -> @heartbeat_defaults
      heartbeat -> Map.merge(@heartbeat_defaults, heartbeat!(heartbeat, @global_ctx))
    end
  end

  @doc """
  Upstream's gRPC listener settings. Snakepit native has no Elixir gRPC
  listener (Python reaches Elixir over a private Unix socket), so this is
  always upstream's `:internal` shape: `{:ok, %{mode: :internal, host:
  host, bind_host: host, port: 0, base_port: nil, pool_size: nil}}`.
  """
  @spec grpc_listener_config() :: {:ok, map()}
  def grpc_listener_config do
    listener = Application.get_env(:snakepit, :grpc_listener) |> loose_attrs()

    host =
      listener[:host] || listener["host"] ||
        Application.get_env(:snakepit, :grpc_internal_host, "127.0.0.1")

    {:ok,
     %{mode: :internal, host: host, bind_host: host, port: 0, base_port: nil, pool_size: nil}}
  end

  @doc "Like `grpc_listener_config/0`, returning the map itself."
  @spec grpc_listener_config!() :: map()
  def grpc_listener_config! do
    {:ok, config} = grpc_listener_config()
    config
  end

  ## Pool forms

  defp legacy_pool(env) do
    pool_config =
      case Keyword.get(env, :pool_config) do
        nil -> %{}
        config -> attrs!(config, "invalid value for :pool_config #{@global_ctx}")
      end

    top_level =
      env
      |> Keyword.take(@legacy_keys)
      |> Enum.reject(fn {_key, value} -> is_nil(value) end)
      |> Map.new()

    pool_config
    |> Map.merge(top_level)
    |> Map.put(:name, :default)
    |> normalize_pool(env)
  end

  defp unique_names!(pools) do
    Enum.reduce(pools, MapSet.new(), fn %{name: name}, seen ->
      case MapSet.member?(seen, name) do
        true ->
          raise ArgumentError,
                "duplicate pool name #{inspect(name)} in :pools (names must be unique)"

        false ->
          MapSet.put(seen, name)
      end
    end)

    pools
  end

  ## Defaults

  defp pool_defaults(env) do
    globals = globals(env)

    renamed =
      for {global, key} <- @renamed_pool_defaults,
          value = Keyword.get(env, global),
          value != nil do
        {key, value!(value, Keyword.fetch!(@pool_fields, key), global, @global_ctx)}
      end

    from_env =
      env
      |> Keyword.take(@global_pool_defaults)
      |> Enum.reject(fn {_key, value} -> is_nil(value) end)
      |> Enum.map(fn {key, value} ->
        {key, value!(value, Keyword.fetch!(@pool_fields, key), key, @global_ctx)}
      end)
      # A pool_size given by its own name wins over default_pool_size.
      |> then(&Map.merge(Map.new(renamed), Map.new(&1)))

    global_heartbeat =
      case Keyword.get(env, :heartbeat) do
        nil -> %{}
        heartbeat -> heartbeat!(heartbeat, @global_ctx)
      end

    @static_defaults
    |> Map.merge(%{
      pool_size: System.schedulers_online() * 2,
      max_workers: 150,
      max_queue_size: globals.pool_max_queue_size,
      queue_timeout_ms: globals.pool_queue_timeout,
      python_executable: globals.python_executable,
      heartbeat: Map.merge(@heartbeat_defaults, global_heartbeat)
    })
    |> Map.merge(from_env)
  end

  defp global!(env, key, default, kind) do
    case Keyword.get(env, key) do
      nil -> default
      value -> value!(value, kind, key, @global_ctx)
    end
  end

  ## Building the normalised pool

  defp build(values, name, heartbeat, ctx) do
    {adapter, adapter_args} = adapter!(values.adapter_args, values.adapter_spec, ctx)
    check_backoff!(values, ctx)

    values
    |> Map.delete(:adapter_spec)
    |> Map.merge(%{
      name: name,
      pool_size: min(values.pool_size, values.max_workers),
      adapter: adapter,
      adapter_args: adapter_args,
      heartbeat: heartbeat,
      capacity_per_worker: capacity(values),
      env: worker_env(values),
      worker_ttl_ms: ttl_ms(values.worker_ttl)
    })
  end

  defp adapter!(args, spec, ctx) do
    case {find_adapter(args), spec} do
      {{:ok, adapter}, nil} ->
        {adapter, args}

      {{:ok, adapter}, adapter} ->
        {adapter, args}

      {{:ok, adapter}, other} ->
        expected = "the class given to --adapter in :adapter_args (#{inspect(adapter)})"
        raise ArgumentError, invalid_message(:adapter_spec, other, expected, ctx)

      {:missing, _spec} ->
        expected = "\"--adapter\" followed by a Python class path"
        raise ArgumentError, invalid_message(:adapter_args, args, expected, ctx)

      {:none, nil} ->
        {@default_adapter, ["--adapter", @default_adapter | args]}

      {:none, spec} ->
        {spec, ["--adapter", spec | args]}
    end
  end

  defp find_adapter(["--adapter", adapter | _rest]) when adapter != "", do: {:ok, adapter}
  defp find_adapter(["--adapter" | _rest]), do: :missing
  defp find_adapter(["--adapter=" <> adapter | _rest]) when adapter != "", do: {:ok, adapter}
  defp find_adapter(["--adapter=" | _rest]), do: :missing
  defp find_adapter([_arg | rest]), do: find_adapter(rest)
  defp find_adapter([]), do: :none

  defp check_backoff!(%{restart_backoff_ms: min, max_restart_backoff_ms: max}, _ctx)
       when max >= min,
       do: :ok

  defp check_backoff!(%{restart_backoff_ms: min, max_restart_backoff_ms: max}, ctx) do
    expected = "an integer >= :restart_backoff_ms (#{min})"
    raise ArgumentError, invalid_message(:max_restart_backoff_ms, max, expected, ctx)
  end

  defp capacity(%{worker_profile: :process}), do: 1
  defp capacity(%{worker_profile: :thread, threads_per_worker: threads}), do: threads

  defp ttl_ms(:infinity), do: nil
  defp ttl_ms({count, unit}), do: count * Map.fetch!(@ttl_unit_ms, unit)

  defp worker_env(%{worker_profile: profile, threads_per_worker: threads, adapter_env: env}) do
    profile
    |> profile_env(threads)
    |> overlay_env(env)
  end

  defp profile_env(:process, _threads), do: Enum.map(@process_env_vars, &{&1, "1"})

  defp profile_env(:thread, threads),
    do: Enum.map(@thread_env_vars, &{&1, Integer.to_string(threads)})

  # Entries of `overrides` win (the last one for a repeated name); names the
  # base does not have are appended in their first-seen order.
  defp overlay_env(base, overrides) do
    latest = Map.new(overrides)
    base_names = Enum.map(base, &elem(&1, 0))
    merged = Enum.map(base, fn {name, value} -> {name, Map.get(latest, name, value)} end)

    extra =
      overrides
      |> Enum.map(&elem(&1, 0))
      |> Enum.uniq()
      |> Enum.reject(&(&1 in base_names))
      |> Enum.map(&{&1, Map.fetch!(latest, &1)})

    merged ++ extra
  end

  defp check_derived!(config, attrs, ctx) do
    Enum.each(@derived_from, fn {key, sources} ->
      expected = Map.fetch!(config, key)

      case Map.fetch(attrs, key) do
        :error ->
          :ok

        {:ok, ^expected} ->
          :ok

        {:ok, other} ->
          allowed = "#{inspect(expected)}, derived from #{sources}; set those instead"
          raise ArgumentError, invalid_message(key, other, allowed, ctx)
      end
    end)

    config
  end

  ## Shape checks

  defp attrs!(value, _what) when is_map(value) and not is_struct(value), do: value

  defp attrs!(value, what) when is_list(value) do
    case Keyword.keyword?(value) do
      # first occurrence wins, as with Keyword.get/2
      true -> value |> Enum.reverse() |> Map.new()
      false -> raise ArgumentError, "#{what}: #{inspect(value)} (expected a map or keyword list)"
    end
  end

  defp attrs!(value, what),
    do: raise(ArgumentError, "#{what}: #{inspect(value)} (expected a map or keyword list)")

  defp name!(%{name: name}) when is_atom(name) and name not in [nil, true, false], do: name

  defp name!(%{name: name}) do
    raise ArgumentError,
          "invalid value for :name in pool config: #{inspect(name)} (expected an atom such as :default)"
  end

  defp name!(attrs) do
    raise ArgumentError, "missing required key :name in pool config #{inspect(attrs)}"
  end

  defp heartbeat!(value, ctx) when is_map(value) or is_list(value) do
    heartbeat_ctx = "in :heartbeat #{ctx}"

    # String keys (as upstream accepts) become atoms; unknown keys are
    # dropped here and named in the boot warning.
    for {key, field_value} <- attrs!(value, "invalid value for :heartbeat #{ctx}"),
        key = heartbeat_key(key),
        List.keymember?(@heartbeat_fields, key, 0),
        into: %{} do
      {key, value!(field_value, Keyword.fetch!(@heartbeat_fields, key), key, heartbeat_ctx)}
    end
  end

  defp heartbeat!(value, ctx) do
    expected = "a map or keyword list of heartbeat options"
    raise ArgumentError, invalid_message(:heartbeat, value, expected, ctx)
  end

  @heartbeat_string_keys Map.new(@heartbeat_fields, fn {key, _} -> {Atom.to_string(key), key} end)
  defp heartbeat_key(key) when is_binary(key), do: Map.get(@heartbeat_string_keys, key, key)
  defp heartbeat_key(key), do: key

  ## Value validation

  defp value!(value, kind, key, ctx) do
    case validate(kind, value) do
      {:ok, valid} -> valid
      {:error, expected} -> raise ArgumentError, invalid_message(key, value, expected, ctx)
    end
  end

  defp invalid_message(key, value, expected, ctx) do
    "invalid value for #{inspect(key)} #{ctx}: #{inspect(value)} (expected #{expected})"
  end

  defp validate(:pos_integer, value) when is_integer(value) and value > 0, do: {:ok, value}
  defp validate(:pos_integer, _value), do: {:error, "a positive integer"}

  defp validate(:non_neg_integer, value) when is_integer(value) and value >= 0, do: {:ok, value}
  defp validate(:non_neg_integer, _value), do: {:error, "a non-negative integer"}

  defp validate(:boolean, value) when is_boolean(value), do: {:ok, value}
  defp validate(:boolean, _value), do: {:error, "true or false"}

  defp validate({:one_of, allowed}, value) do
    case value in allowed do
      true -> {:ok, value}
      false -> {:error, "one of " <> Enum.map_join(allowed, ", ", &inspect/1)}
    end
  end

  defp validate(:optional_module, value) when is_atom(value) and value not in [true, false],
    do: {:ok, value}

  defp validate(:optional_module, _value), do: {:error, "nil or a module name (an atom)"}

  defp validate(:affinity, value) when value in @affinities, do: {:ok, value}

  defp validate(:affinity, value) when is_binary(value) do
    case Enum.find(@affinities, &(Atom.to_string(&1) == String.downcase(value))) do
      nil -> validate(:affinity, nil)
      affinity -> {:ok, affinity}
    end
  end

  defp validate(:affinity, _value),
    do:
      {:error, "one of #{Enum.map_join(@affinities, ", ", &inspect/1)} (or the same as a string)"}

  defp validate(:optional_pos_integer, nil), do: {:ok, nil}

  defp validate(:optional_pos_integer, value) when is_integer(value) and value > 0,
    do: {:ok, value}

  defp validate(:optional_pos_integer, _value), do: {:error, "nil or a positive integer"}

  defp validate(:timeout, :infinity), do: {:ok, :infinity}
  defp validate(:timeout, value) when is_integer(value) and value > 0, do: {:ok, value}
  defp validate(:timeout, _value), do: {:error, "a positive integer (ms) or :infinity"}

  defp validate(:optional_string, nil), do: {:ok, nil}
  defp validate(:optional_string, value) when is_binary(value) and value != "", do: {:ok, value}
  defp validate(:optional_string, _value), do: {:error, "nil or a non-empty string"}

  defp validate(:string_list, value) when is_list(value) do
    case Enum.all?(value, &is_binary/1) do
      true -> {:ok, value}
      false -> {:error, "a list of strings"}
    end
  end

  defp validate(:string_list, _value), do: {:error, "a list of strings"}

  defp validate(:ttl, :infinity), do: {:ok, :infinity}

  defp validate(:ttl, {count, unit} = ttl)
       when is_integer(count) and count > 0 and unit in [:seconds, :minutes, :hours],
       do: {:ok, ttl}

  defp validate(:ttl, _value),
    do: {:error, ":infinity or {n, :seconds | :minutes | :hours} with n a positive integer"}

  defp validate(:max_requests, :infinity), do: {:ok, :infinity}
  defp validate(:max_requests, value) when is_integer(value) and value > 0, do: {:ok, value}
  defp validate(:max_requests, _value), do: {:error, ":infinity or a positive integer"}

  defp validate(:log_level, nil), do: {:ok, nil}
  defp validate(:log_level, :warn), do: {:ok, :warning}
  defp validate(:log_level, value), do: validate({:one_of, @log_levels}, value)

  defp validate(:env, value) when is_map(value) or is_list(value) do
    entries = Enum.map(value, &env_entry/1)

    case Enum.member?(entries, :error) do
      false -> {:ok, entries}
      true -> {:error, env_expectation()}
    end
  end

  defp validate(:env, _value), do: {:error, env_expectation()}

  defp env_expectation do
    "a list of {\"NAME\", \"value\"} string pairs, or a map or keyword list with string values; " <>
      "names must be non-empty without \"=\" and no part may contain a NUL byte"
  end

  defp env_entry({name, value}) when is_atom(name) and name not in [nil, true, false],
    do: env_entry({Atom.to_string(name), value})

  defp env_entry({name, value}) when is_binary(name) and is_binary(value) do
    case name != "" and not String.contains?(name, ["=", <<0>>]) and
           not String.contains?(value, <<0>>) do
      true -> {name, value}
      false -> :error
    end
  end

  defp env_entry(_entry), do: :error
end
