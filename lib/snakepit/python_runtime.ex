defmodule Snakepit.PythonRuntime do
  @moduledoc """
  Chooses the Python interpreter that runs the workers, and says which rule
  chose it.

  The pools (`Snakepit.Pool`), `mix snakepit.doctor`, `mix snakepit.setup`,
  `mix snakepit.python_test` and `Snakepit.PythonVersion` all ask this
  module, so a check never approves an interpreter the pools would not use.

  ## Order

  The first rule that names an interpreter wins:

    1. `:python_executable`: the pool's key, else the global one in the
       `:snakepit` config (an absolute path, a path relative to the app, or
       a command name looked up on `PATH`);
    2. the `SNAKEPIT_PYTHON` environment variable (same forms);
    3. the `:python_runtime` config (upstream's `:python` key is read too):
       `strategy: :system` (skip the virtual environments below),
       `strategy: :venv` (the app's `.venv` or `../.venv`, which must exist),
       `strategy: :managed` / `:uv` or `managed: true` (an interpreter under
       `runtime_dir`, default `priv/snakepit/python`);
    4. `$VIRTUAL_ENV/bin/python3`, when it exists;
    5. the app's `.venv/bin/python3`, then `../.venv/bin/python3`;
    6. the first of `python3` and `python` on `PATH`, `/usr/bin/python3`
       and `/usr/local/bin/python3` that can import `grpc` and
       `google.protobuf`.

  "The app" is the current working directory (the Mix project root under
  `mix`), as in upstream Snakepit.

  Rules 1 to 5 choose an interpreter because it is named or exists; it must
  then import `grpc` and `google.protobuf`, or resolution fails with a
  message naming the rule (a broken virtual environment is reported, not
  skipped over).
  """

  import Bitwise

  @typedoc "The rule that chose the interpreter."
  @type rule ::
          :python_executable
          | :snakepit_python
          | :python_runtime
          | :virtual_env
          | :app_venv
          | :parent_venv
          | :system

  @typedoc """
  A chosen interpreter: its `path` (as found: a virtual environment's
  `bin/python3` is not resolved to its target), the `rule` and a sentence
  (`reason`) naming the rule for messages.
  """
  @type choice :: %{path: String.t(), rule: rule(), reason: String.t()}

  @import_probe "import grpc, google.protobuf"
  @system_candidates ["python3", "python", "/usr/bin/python3", "/usr/local/bin/python3"]
  @strategies [:system, :venv, :managed, :uv]
  @default_runtime_dir "priv/snakepit/python"

  @doc """
  Chooses the interpreter.

  Options: `:python_executable` (the pool's value; defaults to the global
  `:python_executable`), `:root` (the app directory; defaults to the current
  working directory).
  """
  @spec resolve(keyword()) :: {:ok, choice()} | {:error, String.t()}
  def resolve(opts \\ []) do
    with {:ok, choice} <- choose(opts) do
      verify(choice)
    end
  end

  @doc """
  The interpreter the rules name, before checking that it can import
  `grpc` (`mix snakepit.setup` uses it to find the virtual environment to
  repair). Takes the options of `resolve/1`.
  """
  @spec choose(keyword()) :: {:ok, choice()} | {:error, String.t()}
  def choose(opts \\ []) do
    root = Keyword.get_lazy(opts, :root, &File.cwd!/0)

    explicit =
      Keyword.get_lazy(opts, :python_executable, fn ->
        Application.get_env(:snakepit, :python_executable)
      end)

    pick(explicit, root)
  end

  @doc "Like `resolve/1`, but raises `ArgumentError` with the reason."
  @spec resolve!(keyword()) :: choice()
  def resolve!(opts \\ []) do
    case resolve(opts) do
      {:ok, choice} -> choice
      {:error, message} -> raise ArgumentError, message
    end
  end

  @doc """
  Upstream's form of `resolve/1`: `{:ok, path, %{source: rule, reason: text}}`.
  """
  @spec resolve_executable() :: {:ok, String.t(), map()} | {:error, String.t()}
  def resolve_executable do
    with {:ok, choice} <- resolve() do
      {:ok, choice.path, %{source: choice.rule, reason: choice.reason}}
    end
  end

  @doc "The chosen interpreter's path, or `nil` when none can be used."
  @spec executable_path() :: String.t() | nil
  def executable_path do
    case resolve() do
      {:ok, choice} -> choice.path
      {:error, _} -> nil
    end
  end

  @doc """
  The `:python_runtime` config (or upstream's `:python`) as a map, with
  `:strategy` filled in (`:system` when unset, `:managed` when only
  `managed: true` is given). An empty map when neither key is set.
  """
  @spec config() :: map()
  def config do
    case runtime_config() do
      {:ok, config} -> config
      {:error, message} -> raise ArgumentError, message
    end
  end

  @doc "Whether the `:python_runtime` config asks for a managed interpreter."
  @spec managed?(map()) :: boolean()
  def managed?(config \\ config()), do: Map.get(config, :strategy) in [:managed, :uv]

  @doc """
  `:ok` when an interpreter can be used, else `{:error, message}` saying
  what is missing and what to do.
  """
  @spec missing_reason() :: :ok | {:error, String.t()}
  def missing_reason do
    case resolve() do
      {:ok, _} -> :ok
      {:error, _} = error -> error
    end
  end

  # ------------------------------------------------------------ the rules

  defp pick(explicit, root) when explicit not in [nil, ""] do
    named(explicit, :python_executable, ":python_executable in the :snakepit config", root)
  end

  defp pick(_explicit, root) do
    case System.get_env("SNAKEPIT_PYTHON") do
      value when value not in [nil, ""] ->
        named(value, :snakepit_python, "the SNAKEPIT_PYTHON environment variable", root)

      _ ->
        with {:ok, runtime} <- runtime_config() do
          from_runtime(runtime, root)
        end
    end
  end

  defp from_runtime(%{strategy: :system}, _root) do
    system(:python_runtime, ":python_runtime strategy :system")
  end

  defp from_runtime(%{strategy: :venv}, root) do
    case venvs(root) do
      {:ok, choice} ->
        {:ok,
         %{
           choice
           | rule: :python_runtime,
             reason: ":python_runtime strategy :venv, #{choice.reason}"
         }}

      :none ->
        {:error,
         "Python: :python_runtime strategy :venv asks for the app's .venv, but neither " <>
           "#{Path.join(root, ".venv")} nor #{Path.expand("../.venv", root)} has bin/python3; " <>
           "run `mix snakepit.setup` to create it"}
    end
  end

  defp from_runtime(%{strategy: strategy} = runtime, root) when strategy in [:managed, :uv] do
    dir = Path.expand(Map.get(runtime, :runtime_dir, @default_runtime_dir), root)
    reason = ":python_runtime strategy #{inspect(strategy)} (runtime_dir #{dir})"

    case managed_interpreter(dir) do
      nil ->
        {:error,
         "Python: #{reason} names no interpreter: #{dir} has no bin/python3. This project " <>
           "does not download interpreters; put one there or set :python_executable"}

      path ->
        {:ok, %{path: path, rule: :python_runtime, reason: reason}}
    end
  end

  defp from_runtime(_none, root) do
    with :none <- virtual_env(),
         :none <- venvs(root) do
      system(:system, "the first system interpreter that can import grpc")
    end
  end

  defp virtual_env do
    with dir when dir not in [nil, ""] <- System.get_env("VIRTUAL_ENV"),
         path = Path.join([Path.expand(dir), "bin", "python3"]),
         true <- executable_file?(path) do
      {:ok, %{path: path, rule: :virtual_env, reason: "$VIRTUAL_ENV (#{Path.expand(dir)})"}}
    else
      _ -> :none
    end
  end

  defp venvs(root) do
    app = Path.join([Path.expand(root), ".venv", "bin", "python3"])
    parent = Path.expand("../.venv/bin/python3", root)

    cond do
      executable_file?(app) ->
        {:ok,
         %{
           path: app,
           rule: :app_venv,
           reason: "the app's .venv (#{Path.dirname(Path.dirname(app))})"
         }}

      executable_file?(parent) ->
        {:ok,
         %{
           path: parent,
           rule: :parent_venv,
           reason: "the .venv above the app (#{Path.dirname(Path.dirname(parent))})"
         }}

      true ->
        :none
    end
  end

  defp managed_interpreter(dir) do
    Enum.find(
      [Path.join([dir, "bin", "python3"]), Path.join([dir, "bin", "python"])] ++
        Path.wildcard(Path.join([dir, "**", "bin", "python3"])),
      &executable_file?/1
    )
  end

  defp system(rule, reason) do
    found =
      @system_candidates
      |> Enum.map(&lookup/1)
      |> Enum.reject(&is_nil/1)
      |> Enum.uniq()

    case Enum.find(found, &(import_check(&1) == :ok)) do
      nil ->
        {:error,
         "Python: no interpreter can import grpc and google.protobuf (#{reason}; tried " <>
           "#{describe_candidates(found)}). Install Debian's python3-grpcio and python3-protobuf, " <>
           "or name an interpreter with :python_executable or SNAKEPIT_PYTHON"}

      path ->
        {:ok, %{path: path, rule: rule, reason: reason}}
    end
  end

  defp describe_candidates([]), do: "none of #{Enum.join(@system_candidates, ", ")} exists"
  defp describe_candidates(found), do: Enum.join(found, ", ")

  defp named(value, rule, reason, root) do
    case lookup(value, root) do
      nil ->
        {:error,
         "Python: #{reason} is #{inspect(value)}, which is not an executable file" <>
           if(String.contains?(value, "/"), do: "", else: " on PATH")}

      path ->
        {:ok, %{path: path, rule: rule, reason: "#{reason} (#{inspect(value)})"}}
    end
  end

  defp verify(choice) do
    case import_check(choice.path) do
      :ok ->
        {:ok, choice}

      {:error, output} ->
        {:error,
         "Python: #{choice.path}, chosen by #{choice.reason}, cannot import grpc and " <>
           "google.protobuf:\n#{output}\nInstall them into it (a virtual environment made with " <>
           "--system-site-packages sees Debian's python3-grpcio and python3-protobuf; " <>
           "`mix snakepit.setup` makes one), or choose another interpreter"}
    end
  end

  # ----------------------------------------------------------- helpers

  defp runtime_config do
    key = if Application.get_env(:snakepit, :python_runtime), do: :python_runtime, else: :python

    case Application.get_env(:snakepit, key) do
      nil ->
        {:ok, %{}}

      value when is_map(value) or is_list(value) ->
        normalize_runtime(key, value)

      other ->
        {:error,
         "invalid value for #{inspect(key)} in the :snakepit config: #{inspect(other)} (expected a map or keyword list)"}
    end
  end

  defp normalize_runtime(key, value) do
    config = Map.new(value)

    strategy =
      case Map.get(config, :strategy) do
        nil -> if Map.get(config, :managed) == true, do: :managed, else: :system
        strategy -> strategy
      end

    if strategy in @strategies do
      {:ok, Map.put(config, :strategy, strategy)}
    else
      {:error,
       "invalid value for #{inspect(key)} strategy in the :snakepit config: #{inspect(strategy)} " <>
         "(expected one of #{Enum.map_join(@strategies, ", ", &inspect/1)})"}
    end
  rescue
    ArgumentError ->
      {:error,
       "invalid value for #{inspect(key)} in the :snakepit config: #{inspect(value)} (expected a map or keyword list)"}
  end

  defp lookup(value, root \\ nil) do
    cond do
      String.contains?(value, "/") ->
        path = if root, do: Path.expand(value, root), else: Path.expand(value)
        if executable_file?(path), do: path

      true ->
        System.find_executable(value)
    end
  end

  defp executable_file?(path) do
    # File.stat follows symlinks: a venv's bin/python3 is a link.
    case File.stat(path) do
      {:ok, %File.Stat{type: :regular, mode: mode}} -> (mode &&& 0o111) != 0
      _ -> false
    end
  end

  # Answers are remembered per interpreter file (by inode and mtime), so a
  # pool start does not run Python again to ask: successes for good,
  # failures for a minute (installing grpc does not touch the interpreter).
  @failure_ttl_ms 60_000
  defp import_check(path) do
    key = {__MODULE__, :imports, path, file_identity(path)}
    now = System.monotonic_time(:millisecond)

    case :persistent_term.get(key, nil) do
      :ok ->
        :ok

      {:error, output, at} when now - at < @failure_ttl_ms ->
        {:error, output}

      _unknown_or_stale ->
        case run_import_probe(path) do
          :ok ->
            :persistent_term.put(key, :ok)
            :ok

          {:error, output} ->
            :persistent_term.put(key, {:error, output, now})
            {:error, output}
        end
    end
  end

  defp run_import_probe(path) do
    case System.cmd(path, ["-c", @import_probe], stderr_to_stdout: true) do
      {_, 0} -> :ok
      {output, _status} -> {:error, String.trim(output)}
    end
  rescue
    error in ErlangError -> {:error, Exception.message(error)}
  end

  defp file_identity(path) do
    case File.stat(path) do
      {:ok, stat} -> {stat.inode, stat.mtime}
      _ -> nil
    end
  end
end
