defmodule Snakepit.EnvDoctor do
  @moduledoc """
  Checks that the Python side can run the configured pools; what
  `mix snakepit.doctor` prints.

  The checks use the runtime's own code, so they cannot approve what a pool
  would refuse: the interpreter comes from `Snakepit.PythonRuntime` (the
  pools' rule order), and each pool's adapter is tried by starting that pool
  for real with one worker (`Snakepit.Pool`, same interpreter, environment,
  command line, ready handshake and thread-profile rules), then stopping it.

  Checks, in order: `:config`, `:interpreter`, `:grpc` (grpc and protobuf
  import, with versions), `:worker_server` (whether workers serve from
  grpc's core layer or fall back to `grpc.server`, and why; a fallback the
  installed grpcio forces is a warning), `:numpy` (optional: a warning), `:nif`,
  `:runtime_dir` (private and writable), then per pool `:adapter` and, for
  thread-profile pools, `:thread_safe`, and last `:hardware` (what
  `Snakepit.Hardware` sees).
  """

  alias Snakepit.{Error, Hardware, Pool, PythonRuntime, PythonVersion}

  @type status :: :ok | :warning | :error

  @typedoc """
  One check: `name`, a short `label` for display (`"pool :default"`),
  `status`, a one-line `message`, and `details` (JSON-friendly; a failed
  adapter check has the Python `traceback` there).
  """
  @type check_result :: %{
          name: atom(),
          label: String.t(),
          status: status(),
          message: String.t(),
          details: map()
        }

  @default_probe_timeout 60_000

  @doc """
  Runs every check. `{:ok, results}` when none failed (warnings allowed),
  else `{:error, results}`.

  Options: `:probe_timeout` (ms a probe worker may take to start, default
  60 000).
  """
  @spec run(keyword()) :: {:ok, [check_result()]} | {:error, [check_result()]}
  def run(opts \\ []) do
    timeout = Keyword.get(opts, :probe_timeout, @default_probe_timeout)
    {config_check, pools} = check_config()
    interpreter = check_interpreter()
    python = if interpreter.status == :ok, do: interpreter.details.path
    nif = check_nif()

    # The probes start workers: all at once, reported in config order.
    pool_checks =
      pools
      |> Enum.map(fn pool -> Task.async(fn -> check_pool(pool, nif, timeout) end) end)
      |> Enum.flat_map(&Task.await(&1, :infinity))

    results =
      [config_check, interpreter] ++
        check_modules(python) ++
        [nif, check_runtime_dir(nif)] ++ pool_checks ++ [check_hardware()]

    if Enum.any?(results, &(&1.status == :error)), do: {:error, results}, else: {:ok, results}
  end

  @doc """
  Raises `RuntimeError` listing the failed checks unless `run/1` passes.
  """
  @spec ensure_python!(keyword()) :: :ok
  def ensure_python!(opts \\ []) do
    case run(opts) do
      {:ok, _results} ->
        :ok

      {:error, results} ->
        failed = for %{status: :error} = r <- results, do: "* #{r.label}: #{r.message}"
        raise RuntimeError, "Python environment is not ready:\n" <> Enum.join(failed, "\n")
    end
  end

  # ------------------------------------------------------------------ checks

  defp check_config do
    env = Application.get_all_env(:snakepit)
    pools = Snakepit.Config.pools(env)
    names = Enum.map_join(pools, ", ", &inspect(&1.name))
    noun = if length(pools) == 1, do: "pool", else: "pools"

    {result(:config, "config", :ok, "#{length(pools)} #{noun}: #{names}", %{
       pools: Enum.map(pools, & &1.name)
     }), pools}
  rescue
    error in ArgumentError ->
      {result(:config, "config", :error, Exception.message(error), %{}), []}
  end

  defp check_interpreter do
    case PythonRuntime.resolve() do
      {:ok, choice} ->
        {version, threading} = version_facts(choice.path)

        result(
          :interpreter,
          "interpreter",
          :ok,
          "#{choice.path} (#{version}, #{threading}), chosen by #{choice.reason}",
          %{
            path: choice.path,
            rule: choice.rule,
            reason: choice.reason,
            version: version
          }
        )

      {:error, message} ->
        result(:interpreter, "interpreter", :error, message, %{})
    end
  end

  defp version_facts(path) do
    case PythonVersion.facts(path) do
      {:ok, %{version: {major, minor, patch}} = facts} ->
        threading =
          cond do
            facts.gil_disabled -> "free-threaded, GIL off"
            facts.build -> "free-threaded build, GIL on"
            true -> "GIL"
          end

        {"Python #{major}.#{minor}.#{patch}", threading}

      {:error, _} ->
        {"version unknown", "GIL unknown"}
    end
  end

  # grpc, protobuf and NumPy versions from one run of the interpreter.
  @modules_probe """
  import importlib
  for name in ("grpc", "google.protobuf", "numpy"):
      try:
          print(importlib.import_module(name).__version__)
      except Exception as exc:
          print("!" + type(exc).__name__ + ": " + str(exc).replace("\\n", " "))
  """

  defp check_modules(nil) do
    [
      result(:grpc, "grpc", :error, "not checked: no interpreter", %{}),
      result(:worker_server, "worker server", :error, "not checked: no interpreter", %{}),
      result(:numpy, "numpy", :warning, "not checked: no interpreter", %{})
    ]
  end

  defp check_modules(python) do
    case python_lines(python, @modules_probe) do
      {:ok, [grpc, protobuf, numpy]} ->
        grpc = grpc_result(grpc, protobuf)
        [grpc, check_worker_server(python, grpc), numpy_result(numpy)]

      {:ok, other} ->
        check_modules_failed(inspect(other))

      {:error, output} ->
        check_modules_failed(last_line(output))
    end
  end

  defp check_modules_failed(why) do
    [
      result(:grpc, "grpc", :error, "#{why}", %{}),
      result(:worker_server, "worker server", :error, "not checked: grpc did not import", %{}),
      result(:numpy, "numpy", :warning, "not checked", %{})
    ]
  end

  defp grpc_result("!" <> error, _protobuf),
    do: result(:grpc, "grpc", :error, "grpc does not import: #{error}", %{})

  defp grpc_result(_grpc, "!" <> error),
    do: result(:grpc, "grpc", :error, "google.protobuf does not import: #{error}", %{})

  defp grpc_result(grpc, protobuf),
    do:
      result(:grpc, "grpc", :ok, "grpcio #{grpc}, protobuf #{protobuf}", %{
        grpcio: grpc,
        protobuf: protobuf
      })

  # The worker's own choice (snakepit_bridge.worker.choose_server) for this
  # BEAM's SNAKEPIT_WORKER_SERVER, which workers inherit.
  @worker_server_probe """
  import os, sys
  sys.path.insert(0, sys.argv[1])
  from snakepit_bridge.worker import SERVER_ENV, StartupError, choose_server
  try:
      path, why = choose_server(os.environ.get(SERVER_ENV) or "auto")
  except StartupError as exc:
      path, why = "!error", str(exc)
  print(path)
  print(why.replace("\\n", " "))
  """

  defp check_worker_server(_python, %{status: :error}),
    do: result(:worker_server, "worker server", :error, "not checked: grpc did not import", %{})

  defp check_worker_server(python, _grpc) do
    bridge = :code.priv_dir(:snakepit) |> Path.join("python")
    requested = System.get_env("SNAKEPIT_WORKER_SERVER") || "auto"
    details = %{requested: requested}

    case python_lines(python, [@worker_server_probe, bridge]) do
      {:ok, ["core", why]} ->
        result(
          :worker_server,
          "worker server",
          :ok,
          "grpc's core layer: #{why}",
          Map.put(details, :path, :core)
        )

      {:ok, ["fallback", why]} ->
        status = if requested == "fallback", do: :ok, else: :warning

        result(
          :worker_server,
          "worker server",
          status,
          "grpc.server fallback (about twice the CPU per call): #{why}",
          Map.put(details, :path, :fallback)
        )

      {:ok, ["!error", why]} ->
        result(:worker_server, "worker server", :error, why, details)

      {:ok, other} ->
        result(
          :worker_server,
          "worker server",
          :error,
          "unexpected probe output #{inspect(other)}",
          details
        )

      {:error, output} ->
        result(:worker_server, "worker server", :error, last_line(output), details)
    end
  end

  defp numpy_result("!" <> error) do
    result(
      :numpy,
      "numpy",
      :warning,
      "numpy does not import (optional; Debian: apt-get install python3-numpy): #{error}",
      %{}
    )
  end

  defp numpy_result(version),
    do: result(:numpy, "numpy", :ok, "numpy #{version}", %{numpy: version})

  defp check_nif do
    path = :code.priv_dir(:snakepit) |> Path.join("snakepit_nif.so")

    case Code.ensure_loaded(Snakepit.Native) do
      {:module, _} ->
        {_run_id, runtime_dir} = Snakepit.Native.runtime_info()
        result(:nif, "nif", :ok, "#{path} loaded", %{path: path, runtime_dir: runtime_dir})

      {:error, reason} ->
        hint =
          if File.exists?(path),
            do: "see the load error logged above",
            else: "the file is missing: run `mix compile`"

        result(:nif, "nif", :error, "#{path} did not load (#{inspect(reason)}): #{hint}", %{
          path: path
        })
    end
  end

  defp check_runtime_dir(%{status: :ok, details: %{runtime_dir: dir}}) do
    with {:ok, stat} <- File.stat(dir),
         {:ok, own} <- File.stat("/proc/self"),
         :ok <- private(stat, own.uid),
         probe = Path.join(dir, ".doctor-#{System.unique_integer([:positive])}"),
         :ok <- File.write(probe, ""),
         :ok <- File.rm(probe) do
      result(
        :runtime_dir,
        "runtime dir",
        :ok,
        "#{dir} (mode 0700, owned by uid #{own.uid}, writable)",
        %{
          path: dir
        }
      )
    else
      {:error, reason} when is_atom(reason) ->
        result(:runtime_dir, "runtime dir", :error, "#{dir}: #{:file.format_error(reason)}", %{
          path: dir
        })

      {:error, message} ->
        result(:runtime_dir, "runtime dir", :error, "#{dir}: #{message}", %{path: dir})
    end
  end

  defp check_runtime_dir(_nif_failed) do
    result(:runtime_dir, "runtime dir", :error, "not checked: the NIF did not load", %{})
  end

  defp private(%File.Stat{uid: uid, mode: mode}, own_uid) do
    cond do
      uid != own_uid ->
        {:error, "owned by uid #{uid}, not by this process (uid #{own_uid})"}

      Bitwise.band(mode, 0o077) != 0 ->
        {:error, "mode #{Integer.to_string(Bitwise.band(mode, 0o777), 8)}, not private (0700)"}

      true ->
        :ok
    end
  end

  defp check_pool(pool, nif, timeout) do
    label = "pool #{inspect(pool.name)}"
    base = %{pool: pool.name, adapter: pool.adapter, profile: pool.worker_profile}

    outcome =
      if nif.status == :ok,
        do: probe(pool, timeout),
        else: {:error, "not checked: the NIF did not load", %{}}

    adapter =
      case outcome do
        {:ok, python} ->
          result(
            :adapter,
            label,
            :ok,
            "#{pool.adapter} imports and builds (#{pool.worker_profile} profile, #{python.path})",
            Map.merge(base, %{python: python.path, python_rule: python.rule})
          )

        {:error, message, details} ->
          result(:adapter, label, :error, "#{pool.adapter}: #{message}", Map.merge(base, details))
      end

    if pool.worker_profile == :thread,
      do: [adapter, thread_safe(pool, label, outcome)],
      else: [adapter]
  end

  defp thread_safe(pool, label, outcome) do
    case outcome do
      {:ok, _python} ->
        result(:thread_safe, label, :ok, "#{pool.adapter} declares __thread_safe__ = True", %{
          pool: pool.name
        })

      {:error, _message, %{python_type: "ThreadSafetyError"}} ->
        result(
          :thread_safe,
          label,
          :error,
          "#{pool.adapter} does not declare __thread_safe__ = True (subclass ThreadSafeAdapter), " <>
            "which the thread profile requires",
          %{pool: pool.name}
        )

      {:error, _message, _details} ->
        result(:thread_safe, label, :warning, "not checked: the adapter did not start", %{
          pool: pool.name
        })
    end
  end

  # Starts the pool for real with one worker, in a process of its own that
  # traps the exit of a pool whose init raises.
  defp probe(pool, timeout) do
    name = :"snakepit_doctor_#{pool.name}"

    config = %{
      pool
      | name: name,
        pool_size: 1,
        startup_batch_size: 1,
        startup_batch_delay_ms: 0,
        heartbeat: %{pool.heartbeat | enabled: false}
    }

    fn ->
      Process.flag(:trap_exit, true)

      case Pool.start_link(config) do
        {:ok, pid} ->
          outcome = Pool.await_ready(name, timeout)
          {:ok, info} = Pool.info(name)
          GenServer.stop(pid)
          probe_outcome(outcome, info.python)

        {:error, {%{__exception__: true} = exception, _stacktrace}} ->
          {:error, Exception.message(exception), %{}}

        {:error, reason} ->
          {:error, "the pool did not start: #{inspect(reason)}", %{}}
      end
    end
    |> Task.async()
    |> Task.await(:infinity)
  end

  defp probe_outcome(:ok, python), do: {:ok, python}

  # A failed pool wraps its worker's start error; the doctor shows that one.
  defp probe_outcome({:error, %Error{details: %{start_error: start}} = error}, python) do
    probe_outcome(
      {:error, %{error | message: error.details.start_message, details: start}},
      python
    )
  end

  defp probe_outcome({:error, %Error{} = error}, _python) do
    type = Map.get(error.details, :python_type)
    traceback = error.python_traceback

    details =
      %{python_type: type, traceback: traceback, python: Map.get(error.details, :python)}
      |> Enum.reject(fn {_key, value} -> is_nil(value) end)
      |> Map.new()

    {:error, Exception.message(error), details}
  end

  defp check_hardware do
    info = Hardware.detect()
    cpu = info.cpu

    gpus =
      for {kind, %{devices: devices}} <- [cuda: info.cuda, rocm: info.rocm], devices != [] do
        "#{length(devices)} #{kind |> Atom.to_string() |> String.upcase()} (#{Enum.map_join(devices, ", ", & &1.name)})"
      end

    accelerators = if gpus == [], do: "no GPU", else: Enum.join(gpus, ", ")

    result(
      :hardware,
      "hardware",
      :ok,
      "#{info.platform}, #{cpu.model}, #{cpu.cores} cores / #{cpu.threads} threads, " <>
        "#{cpu.memory_total_mb} MB, accelerator #{info.accelerator} (#{accelerators})",
      info
    )
  end

  # ----------------------------------------------------------------- helpers

  defp result(name, label, status, message, details),
    do: %{name: name, label: label, status: status, message: message, details: details}

  defp python_lines(python, script) when is_binary(script), do: python_lines(python, [script])

  defp python_lines(python, [script | args]) do
    case System.cmd(python, ["-c", script | args], stderr_to_stdout: true) do
      {output, 0} -> {:ok, String.split(output, "\n", trim: true)}
      {output, _} -> {:error, String.trim(output)}
    end
  rescue
    error in ErlangError -> {:error, Exception.message(error)}
  end

  defp last_line(output), do: output |> String.split("\n", trim: true) |> List.last("")
end
