defmodule Snakepit.Python do
  @moduledoc """
  Finds the Python interpreter that runs workers and builds the worker's
  command line and environment.

  The interpreter is, in order: the pool's or the application's
  `python_executable`, the `SNAKEPIT_PYTHON` environment variable, then the
  first of `/usr/bin/python3`, `python3` and `python` on `PATH` that can
  import `grpc` and `google.protobuf`.
  """

  @candidates ["/usr/bin/python3", "python3", "python"]
  @probe "import grpc, google.protobuf"

  @doc """
  The interpreter for a pool: an absolute path, or raises with what to
  install or configure.
  """
  @spec executable!(String.t() | nil) :: String.t()
  def executable!(configured) do
    case configured || System.get_env("SNAKEPIT_PYTHON") do
      nil -> discover!()
      "" -> discover!()
      explicit -> check_explicit!(explicit)
    end
  end

  @doc "The directory holding `grpc_server.py` and the `snakepit_bridge` package."
  @spec bridge_dir() :: String.t()
  def bridge_dir, do: :snakepit |> :code.priv_dir() |> Path.join("python")

  @doc """
  The worker's environment as `NAME=value` strings: this BEAM's environment,
  the pool's `env`, and `PYTHONPATH` led by the bridge directory (then the
  pool's `PYTHONPATH`, if any, then this BEAM's).
  """
  @spec worker_env([{String.t(), String.t()}]) :: [String.t()]
  def worker_env(pool_env) do
    pool_env = Map.new(pool_env)

    python_path =
      [bridge_dir(), pool_env["PYTHONPATH"], System.get_env("PYTHONPATH")]
      |> Enum.reject(&(&1 in [nil, ""]))
      |> Enum.join(":")

    System.get_env()
    |> Map.merge(pool_env)
    |> Map.put("PYTHONPATH", python_path)
    |> Map.put("PYTHONUNBUFFERED", "1")
    |> Map.put("SNAKEPIT_ELIXIR_SOCKET", elixir_tools_socket())
    |> Enum.map(fn {name, value} -> name <> "=" <> value end)
  end

  # Where Python reaches Elixir tools (see Snakepit.Bridge.ToolRegistry).
  defp elixir_tools_socket do
    {_run_id, runtime_dir} = Snakepit.Native.runtime_info()
    Path.join(runtime_dir, "elixir_tools.sock")
  end

  defp check_explicit!(name) do
    path = resolve_path(name)

    cond do
      path == nil ->
        raise ArgumentError,
              "Python interpreter #{inspect(name)} (from :python_executable or SNAKEPIT_PYTHON) was not found"

      not can_import_grpc?(path) ->
        raise ArgumentError,
              "Python interpreter #{path} cannot import grpc and google.protobuf; " <>
                "install them (Debian: apt-get install python3-grpcio python3-protobuf) " <>
                "or point :python_executable / SNAKEPIT_PYTHON at one that can"

      true ->
        path
    end
  end

  defp discover! do
    key = {__MODULE__, :discovered}

    case :persistent_term.get(key, nil) do
      nil ->
        path = Enum.find_value(@candidates, &usable/1) || raise ArgumentError, not_found_message()
        :persistent_term.put(key, path)
        path

      path ->
        path
    end
  end

  defp usable(candidate) do
    with path when is_binary(path) <- resolve_path(candidate),
         true <- can_import_grpc?(path) do
      path
    else
      _ -> nil
    end
  end

  defp resolve_path("/" <> _ = path), do: if(File.exists?(path), do: path)
  defp resolve_path(name), do: System.find_executable(name)

  defp can_import_grpc?(path) do
    match?({_, 0}, System.cmd(path, ["-c", @probe], stderr_to_stdout: true))
  end

  defp not_found_message do
    "no Python interpreter that can import grpc was found (tried #{Enum.join(@candidates, ", ")}); " <>
      "install Debian's python3-grpcio and python3-protobuf, or set :python_executable " <>
      "in the :snakepit config or the SNAKEPIT_PYTHON environment variable"
  end
end
