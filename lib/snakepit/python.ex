defmodule Snakepit.Python do
  @moduledoc """
  Builds the worker's environment: where Python finds the bridge, the
  app's adapters and `adapter_env`'s modules.

  The interpreter itself is chosen by `Snakepit.PythonRuntime`.

  ## PYTHONPATH

  In this order, each directory once:

    1. the bridge (`grpc_server.py` and the `snakepit_bridge` package);
    2. the app's `priv/python`: that of every loaded application that
       depends on `:snakepit` (so a release finds it too), then
       `File.cwd!()/priv/python` (upstream's rule), where they exist;
    3. the pool's `adapter_env` `PYTHONPATH`;
    4. the `PYTHONPATH` this BEAM was started with.
  """

  @doc "The directory holding `grpc_server.py` and the `snakepit_bridge` package."
  @spec bridge_dir() :: String.t()
  def bridge_dir, do: :snakepit |> :code.priv_dir() |> Path.join("python")

  @doc """
  The worker's `PYTHONPATH` entries (see the module documentation), given
  the pool's `adapter_env` `PYTHONPATH` (or `nil`).
  """
  @spec python_path(String.t() | nil) :: [String.t()]
  def python_path(adapter_python_path) do
    ([bridge_dir()] ++
       app_python_dirs() ++
       split(adapter_python_path) ++ split(System.get_env("PYTHONPATH")))
    |> uniq_dirs()
  end

  @doc """
  The worker's environment as `NAME=value` strings: this BEAM's environment,
  the pool's `env`, and `PYTHONPATH` as `python_path/1` builds it.
  """
  @spec worker_env([{String.t(), String.t()}]) :: [String.t()]
  def worker_env(pool_env) do
    pool_env = Map.new(pool_env)

    System.get_env()
    |> Map.merge(pool_env)
    |> Map.put("PYTHONPATH", pool_env |> Map.get("PYTHONPATH") |> python_path() |> Enum.join(":"))
    |> Map.put("PYTHONUNBUFFERED", "1")
    |> Map.put("SNAKEPIT_ELIXIR_SOCKET", elixir_tools_socket())
    |> Enum.map(fn {name, value} -> name <> "=" <> value end)
  end

  @doc """
  The unix socket of the native gRPC server through which Python reaches
  Elixir tools (see `Snakepit.Bridge.ToolRegistry`) and sends telemetry.
  """
  @spec elixir_tools_socket() :: String.t()
  def elixir_tools_socket, do: Snakepit.Native.elixir_tools_socket()

  defp app_python_dirs do
    dependents =
      for {app, _description, _vsn} <- Application.loaded_applications(),
          app != :snakepit,
          :snakepit in (Application.spec(app, :applications) || []),
          dir = :code.priv_dir(app),
          is_list(dir),
          do: dir |> List.to_string() |> Path.join("python")

    (dependents ++ [Path.join(File.cwd!(), "priv/python")])
    |> Enum.filter(&File.dir?/1)
  end

  # _build/ENV/lib/APP/priv is a link to the app's priv in development, so
  # one directory can appear under two names: keep the first.
  defp uniq_dirs(dirs) do
    Enum.uniq_by(dirs, fn dir ->
      case File.stat(dir) do
        {:ok, %File.Stat{major_device: device, inode: inode}} -> {device, inode}
        {:error, _} -> dir
      end
    end)
  end

  defp split(nil), do: []
  defp split(value), do: value |> String.split(":") |> Enum.reject(&(&1 == ""))
end
