defmodule Snakepit.PythonVersion do
  @moduledoc """
  The version of the Python interpreter the pools use (chosen by
  `Snakepit.PythonRuntime`), whether it can run without the GIL, and the
  worker profile that suits it.

  Two questions are kept apart:

    * `supports_free_threading?/1`: is the version one that has
      free-threaded builds (3.13 and later), as upstream Snakepit answers it;
    * `free_threading/0,1`: does this interpreter actually run without the
      GIL: a free-threaded build (`Py_GIL_DISABLED`) with the GIL not turned
      back on (`PYTHON_GIL=1` or an extension module that needs it).
  """

  alias Snakepit.PythonRuntime

  @type version :: {non_neg_integer(), non_neg_integer(), non_neg_integer()}

  @typedoc "`build`: a free-threaded build; `gil_disabled`: the GIL is off in this process."
  @type free_threading :: %{build: boolean(), gil_disabled: boolean()}

  @min_supported {3, 8, 0}
  @free_threading_min {3, 13, 0}

  @probe """
  import sys, sysconfig
  gil = getattr(sys, "_is_gil_enabled", None)
  print("%d.%d.%d" % sys.version_info[:3])
  print(1 if sysconfig.get_config_var("Py_GIL_DISABLED") else 0)
  print(0 if gil is None or gil() else 1)
  """

  @doc "The version of the interpreter the pools use."
  @spec detect() :: {:ok, version()} | {:error, term()}
  def detect do
    with {:ok, path} <- interpreter(), do: detect(path)
  end

  @doc "The version of the interpreter at `path`."
  @spec detect(String.t()) :: {:ok, version()} | {:error, term()}
  def detect(path) when is_binary(path) do
    with {:ok, %{version: version}} <- facts(path), do: {:ok, version}
  end

  @doc "Whether the interpreter the pools use runs without the GIL."
  @spec free_threading() :: {:ok, free_threading()} | {:error, term()}
  def free_threading do
    with {:ok, path} <- interpreter(), do: free_threading(path)
  end

  @doc "Whether the interpreter at `path` runs without the GIL."
  @spec free_threading(String.t()) :: {:ok, free_threading()} | {:error, term()}
  def free_threading(path) when is_binary(path) do
    with {:ok, facts} <- facts(path), do: {:ok, Map.delete(facts, :version)}
  end

  @doc "`version` and `free_threading/1`'s facts of the interpreter at `path`, from one run of it."
  @spec facts(String.t()) ::
          {:ok, %{version: version(), build: boolean(), gil_disabled: boolean()}}
          | {:error, term()}
  def facts(path) when is_binary(path) do
    case System.cmd(path, ["-c", @probe], stderr_to_stdout: true) do
      {output, 0} -> parse(output)
      {output, status} -> {:error, {:python_failed, status, String.trim(output)}}
    end
  rescue
    error in ErlangError -> {:error, {:python_not_found, Exception.message(error)}}
  end

  @doc "Whether `version` is one that has free-threaded builds (3.13 or later)."
  @spec supports_free_threading?(version()) :: boolean()
  def supports_free_threading?({_, _, _} = version), do: version >= @free_threading_min

  @doc """
  The profile for the interpreter the pools use: `:thread` when it really
  runs without the GIL, else `:process` (also when no interpreter is found).
  """
  @spec recommend_profile() :: :process | :thread
  def recommend_profile do
    case free_threading() do
      {:ok, %{gil_disabled: true}} -> :thread
      _ -> :process
    end
  end

  @doc "The profile for a version, by upstream's rule: `:thread` from 3.13 on."
  @spec recommend_profile(version()) :: :process | :thread
  def recommend_profile({_, _, _} = version),
    do: if(supports_free_threading?(version), do: :thread, else: :process)

  @doc "`:ok` when the interpreter the pools use is Python 3.8 or later."
  @spec validate() :: :ok | {:error, term()}
  def validate do
    case detect() do
      {:ok, version} when version >= @min_supported -> :ok
      {:ok, version} -> {:error, {:unsupported_version, version}}
      {:error, _} = error -> error
    end
  end

  defp interpreter do
    case PythonRuntime.resolve() do
      {:ok, choice} -> {:ok, choice.path}
      {:error, message} -> {:error, {:python_not_found, message}}
    end
  end

  defp parse(output) do
    case String.split(output, "\n", trim: true) do
      [version, build, gil_off] ->
        [major, minor, patch] = version |> String.split(".") |> Enum.map(&String.to_integer/1)

        {:ok,
         %{version: {major, minor, patch}, build: build == "1", gil_disabled: gil_off == "1"}}

      _ ->
        {:error, {:invalid_version, String.trim(output)}}
    end
  end
end
