defmodule Snakepit.Error.PythonException do
  @moduledoc """
  A Python exception raised by a tool, as returned by `Snakepit.execute/3`:
  `{:error, %Snakepit.Error.ValueError{}}` for a `ValueError`, and so on for
  `KeyError`, `IndexError`, `TypeError`, `AttributeError`, `ImportError`,
  `RuntimeError`, `NotImplementedError`, `FileNotFoundError`,
  `PermissionError` and `ZeroDivisionError`; any other type (including
  subclasses and custom exceptions) is a `%Snakepit.Error.PythonException{}`.

  Every one of these structs has the fields

    * `message` - the exception's message (`str(exc)`)
    * `python_type` - the exception class name, e.g. `"ValueError"`
    * `python_traceback` - the formatted Python traceback
    * `stacktrace` - the traceback's `File ..., line ..., in ...` lines
    * `context` - where it happened: `:command`, `:pool_name`, `:worker_id`
    * `category` (always `:python_error`), `details` (`reason`,
      `python_type`, `command`, `pool_name`, `worker_id`) and `grpc_status`,
      the fields of `%Snakepit.Error{}`, so matches such as
      `{:error, %{category: :python_error}}` keep working.

  `"\#{error}"` renders it as `Snakepit.Error.format/1` does.

  Each translation emits `[:snakepit, :python, :exception, :mapped]` (a
  type with its own struct) or `[:snakepit, :python, :exception, :unmapped]`,
  metadata `%{python_type, library, function}`.
  """

  alias Snakepit.{Error, Telemetry}

  @fields [
    :message,
    :context,
    :stacktrace,
    :python_type,
    :python_traceback,
    category: :python_error,
    details: %{},
    grpc_status: nil
  ]

  @mapped %{
    "ValueError" => Snakepit.Error.ValueError,
    "KeyError" => Snakepit.Error.KeyError,
    "IndexError" => Snakepit.Error.IndexError,
    "TypeError" => Snakepit.Error.TypeError,
    "AttributeError" => Snakepit.Error.AttributeError,
    "ImportError" => Snakepit.Error.ImportError,
    "RuntimeError" => Snakepit.Error.RuntimeError,
    "NotImplementedError" => Snakepit.Error.NotImplementedError,
    "FileNotFoundError" => Snakepit.Error.FileNotFoundError,
    "PermissionError" => Snakepit.Error.PermissionError,
    "ZeroDivisionError" => Snakepit.Error.ZeroDivisionError
  }

  @typedoc "Any of the Python exception structs."
  @type any_t :: %{
          __struct__: module(),
          __exception__: true,
          message: String.t(),
          context: map() | nil,
          stacktrace: [String.t()] | nil,
          python_type: String.t() | nil,
          python_traceback: String.t() | nil,
          category: :python_error,
          details: map(),
          grpc_status: term()
        }

  @type t :: %__MODULE__{}

  defexception @fields

  defimpl String.Chars do
    def to_string(error), do: Snakepit.Error.format(error)
  end

  @doc false
  # The field list the per-type structs share.
  def fields, do: @fields

  @doc "The Python type names that have their own struct, and the struct modules."
  @spec mapping() :: %{String.t() => module()}
  def mapping, do: @mapped

  @doc "The struct module for a Python exception type (`PythonException` for unmapped types)."
  @spec module_for(String.t() | nil) :: module()
  def module_for(type), do: Map.get(@mapped, type, __MODULE__)

  @doc """
  Builds the exception struct of `type` from its parts. `opts`: `:traceback`,
  `:context` (map), `:details` (map, merged over `reason` and `python_type`).

      iex> e = Snakepit.Error.PythonException.new("KeyError", "'x'")
      iex> {e.__struct__, e.category, e.details.python_type}
      {Snakepit.Error.KeyError, :python_error, "KeyError"}
  """
  @spec new(String.t() | nil, String.t(), keyword()) :: any_t()
  def new(type, message, opts \\ []) when is_binary(message) do
    traceback = opts[:traceback]

    details =
      %{reason: :python_error}
      |> put_type(type)
      |> Map.merge(Map.new(Keyword.get(opts, :details, %{})))

    struct(module_for(type),
      message: message,
      python_type: type,
      python_traceback: traceback,
      stacktrace: frames(traceback),
      context: Map.new(Keyword.get(opts, :context, %{})),
      details: details
    )
  end

  @doc """
  Turns a `%Snakepit.Error{category: :python_error}` from a tool into the
  exception struct of its Python type. A `ToolNotFoundError` (no such tool)
  stays a `%Snakepit.Error{}` with reason `:tool_not_found`; other errors are
  returned unchanged.
  """
  @spec from_error(Error.t()) :: Error.t() | any_t()
  def from_error(
        %Error{category: :python_error, details: %{python_type: "ToolNotFoundError"}} = e
      ),
      do: %{e | details: %{e.details | reason: :tool_not_found}}

  def from_error(%Error{category: :python_error, details: details} = error) do
    type = details[:python_type]
    emit_translated(type, details)

    new(type, error.message,
      traceback: error.python_traceback,
      details: details,
      context: Map.take(details, [:command, :pool_name, :worker_id])
    )
  end

  def from_error(error), do: error

  defp put_type(details, nil), do: details
  defp put_type(details, type), do: Map.put(details, :python_type, type)

  defp frames(nil), do: []

  defp frames(traceback) when is_binary(traceback) do
    traceback
    |> String.split("\n")
    |> Enum.filter(&String.starts_with?(&1, "  File "))
    |> Enum.map(&String.trim/1)
  end

  defp emit_translated(type, details) do
    event = if Map.has_key?(@mapped, type), do: :mapped, else: :unmapped

    Telemetry.execute([:snakepit, :python, :exception, event], %{}, %{
      python_type: type,
      library: nil,
      function: details[:command]
    })
  end
end

for {type, module} <- Snakepit.Error.PythonException.mapping() do
  defmodule module do
    @moduledoc """
    The Python `#{type}` raised by a tool. Fields as
    `Snakepit.Error.PythonException`.
    """
    @type t :: %__MODULE__{}
    defexception Snakepit.Error.PythonException.fields()

    defimpl String.Chars do
      def to_string(error), do: Snakepit.Error.format(error)
    end
  end
end
