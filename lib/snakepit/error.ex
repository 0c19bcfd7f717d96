defmodule Snakepit.Error do
  @moduledoc """
  The error returned (or raised) by Snakepit calls for everything that is
  not a tool's own exception.

      %Snakepit.Error{
        category: :pool,
        message: "no pool named :ml is running",
        details: %{reason: :pool_not_found, command: "predict", pool_name: :ml},
        python_traceback: nil,
        grpc_status: nil
      }

  `category` is one of `:worker`, `:timeout`, `:python_error`, `:grpc_error`,
  `:validation` or `:pool`. Errors returned by calls always carry
  `details.reason` (an atom) and, when known, `details.command` and
  `details.pool_name`.

  A Python exception raised by a tool is returned as the exception struct of
  its type instead (`Snakepit.Error.ValueError`, `Snakepit.Error.KeyError`,
  ..., `Snakepit.Error.PythonException` for other types; see
  `Snakepit.Error.PythonException`). Those structs also carry `category:
  :python_error`, `details`, `python_type` and `python_traceback`, so code
  that matches on these fields works with both.

  `to_string/1` renders an error for logs:

      iex> to_string(Snakepit.Error.pool_error("Pool not found", %{pool_name: :test}))
      "[pool] Pool not found\\nDetails: %{pool_name: :test}"

  Some reasons always belong to the same category, whatever the caller says
  (see `category_for_reason/1`):

  | reason | category |
  |---|---|
  | `:queue_timeout`, `:worker_timeout` | `:timeout` |
  | `:pool_not_found`, `:pool_not_initialized`, `:pool_saturated`, `:worker_busy`, `:session_worker_unavailable`, `:no_workers_available` | `:pool` |
  """

  @categories [:worker, :timeout, :python_error, :grpc_error, :validation, :pool]
  @timeout_reasons [:queue_timeout, :worker_timeout]
  @pool_reasons [
    :pool_not_found,
    :pool_not_initialized,
    :pool_saturated,
    :worker_busy,
    :session_worker_unavailable,
    :no_workers_available
  ]

  @typedoc "What kind of failure this is."
  @type category :: :worker | :timeout | :python_error | :grpc_error | :validation | :pool

  @typedoc "Structured context; errors returned by calls always have `:reason`."
  @type details :: %{optional(atom()) => term()}

  @type t :: %__MODULE__{
          category: category(),
          message: String.t(),
          details: details(),
          python_traceback: String.t() | nil,
          grpc_status: non_neg_integer() | atom() | nil
        }

  defexception category: :worker,
               message: "",
               details: %{reason: :unknown},
               python_traceback: nil,
               grpc_status: nil

  @doc """
  Returns a readable one-line message.

  Python errors are prefixed with the Python exception type, e.g.
  `"ValueError: bad input"`; other errors return their message as is.
  """
  @impl true
  @spec message(t()) :: String.t()
  def message(%__MODULE__{
        category: :python_error,
        message: message,
        details: %{python_type: type}
      })
      when is_binary(type) and type != "" do
    prefix_type(message, type)
  end

  def message(%__MODULE__{message: message}), do: message

  @doc """
  Builds an error.

  `message` may be `nil`, in which case one is derived from `reason`.

  Options:

    * `:command` - the command that failed, stored in `details.command`
    * `:pool_name` - the pool it ran on, stored in `details.pool_name`
    * `:python_type` - the Python exception class, stored in `details.python_type`
    * `:python_traceback` - the Python traceback text
    * `:grpc_status` - the gRPC status code (integer)
    * `:details` - a map of extra details merged in (`:reason` cannot be overridden)
  """
  @spec new(category(), atom(), String.t() | nil, keyword()) :: t()
  def new(category, reason, message, opts \\ [])
      when category in @categories and is_atom(reason) and is_list(opts) do
    known =
      [
        reason: reason,
        command: opts[:command],
        pool_name: opts[:pool_name],
        python_type: opts[:python_type]
      ]
      |> Enum.reject(fn {_key, value} -> is_nil(value) end)
      |> Map.new()

    %__MODULE__{
      category: category,
      message: message_text(message, reason),
      details: opts |> Keyword.get(:details, %{}) |> Map.new() |> Map.merge(known),
      python_traceback: opts[:python_traceback],
      grpc_status: grpc_status(opts[:grpc_status])
    }
  end

  @doc """
  A worker error (category `:worker`).

      iex> Snakepit.Error.worker_error("Worker crashed")
      %Snakepit.Error{category: :worker, message: "Worker crashed", details: %{}}
  """
  @spec worker_error(String.t(), map()) :: t()
  def worker_error(message, details \\ %{}), do: build(:worker, message, details)

  @doc """
  A timeout error (category `:timeout`).

      iex> Snakepit.Error.timeout_error("Request timed out", %{timeout_ms: 5000})
      %Snakepit.Error{category: :timeout, message: "Request timed out", details: %{timeout_ms: 5000}}
  """
  @spec timeout_error(String.t(), map()) :: t()
  def timeout_error(message, details \\ %{}), do: build(:timeout, message, details)

  @doc """
  A Python error (category `:python_error`) with its traceback; the message
  is prefixed with the exception type and `details.exception_type` set.

      iex> Snakepit.Error.python_error("ValueError", "Invalid input", "Traceback...")
      %Snakepit.Error{
        category: :python_error,
        message: "ValueError: Invalid input",
        python_traceback: "Traceback...",
        details: %{exception_type: "ValueError"}
      }
  """
  @spec python_error(String.t(), String.t(), String.t() | nil, map()) :: t()
  def python_error(exception_type, message, traceback, details \\ %{}) do
    %{
      build(:python_error, "#{exception_type}: #{message}", details)
      | python_traceback: traceback,
        details: Map.put(Map.new(details), :exception_type, exception_type)
    }
  end

  @doc """
  A gRPC error (category `:grpc_error`); `status` is a gRPC status name or code.

      iex> Snakepit.Error.grpc_error(:unavailable, "Service unavailable")
      %Snakepit.Error{category: :grpc_error, message: "Service unavailable", grpc_status: :unavailable, details: %{}}
  """
  @spec grpc_error(atom() | non_neg_integer(), String.t(), map()) :: t()
  def grpc_error(status, message, details \\ %{})
      when is_atom(status) or (is_integer(status) and status >= 0) do
    %{build(:grpc_error, message, details) | grpc_status: status}
  end

  @doc """
  A pool error (category `:pool`).

      iex> Snakepit.Error.pool_error("Pool not found", %{pool_name: :test})
      %Snakepit.Error{category: :pool, message: "Pool not found", details: %{pool_name: :test}}
  """
  @spec pool_error(String.t(), map()) :: t()
  def pool_error(message, details \\ %{}), do: build(:pool, message, details)

  @doc """
  A validation error (category `:validation`).

      iex> Snakepit.Error.validation_error("Invalid field", %{field: "user_id"})
      %Snakepit.Error{category: :validation, message: "Invalid field", details: %{field: "user_id"}}
  """
  @spec validation_error(String.t(), map()) :: t()
  def validation_error(message, details \\ %{}), do: build(:validation, message, details)

  defp build(category, message, details) when is_binary(message) do
    %__MODULE__{category: category, message: message, details: Map.new(details)}
  end

  @doc """
  Converts a native error tuple into an error.

  The tuple is `{category, reason, message, extra}` (a 3-tuple without
  `extra` is accepted too). `extra` may hold, with string or atom keys:
  `"python_type"`, `"traceback"`, `"grpc_status"`, `"path"`,
  `"worker_id"`, and for a worker that ended `"exit_status"` (its exit
  code) or `"exit_signal"` (the signal that killed it, e.g. `"SIGSEGV"`);
  the last four go to `details`. The category is taken from `category_for_reason/1` when the
  reason has a fixed category, otherwise from the tuple (an unknown category
  becomes `:worker`).

  `opts` accepts the same options as `new/4`, typically `:command` and
  `:pool_name`; they win over values found in `extra`.

  A Python exception (category `:python_error` with a `python_type`) comes
  back as its exception struct (see `Snakepit.Error.PythonException`); a
  Python `ToolNotFoundError` (the tool does not exist) stays a
  `%Snakepit.Error{}` with reason `:tool_not_found`.
  """
  @spec from_native(tuple(), keyword()) :: t() | Snakepit.Error.PythonException.any_t()
  def from_native(native, opts \\ [])

  def from_native({category, reason, message}, opts),
    do: from_native({category, reason, message, %{}}, opts)

  def from_native({category, reason, message, extra}, opts)
      when is_atom(category) and is_atom(reason) and is_map(extra) and is_list(opts) do
    native_details =
      [
        path: extra_get(extra, :path),
        worker_id: extra_get(extra, :worker_id),
        exit_status: extra_get(extra, :exit_status),
        exit_signal: extra_get(extra, :exit_signal)
      ]
      |> Enum.reject(fn {_key, value} -> is_nil(value) end)
      |> Map.new()

    native_opts = [
      python_type: extra_get(extra, :python_type),
      python_traceback: extra_get(extra, :traceback),
      grpc_status: extra_get(extra, :grpc_status),
      details: native_details
    ]

    merged = Keyword.merge(native_opts, opts, &prefer_caller/3)

    category
    |> resolve_category(reason)
    |> new(reason, native_message(message), merged)
    |> Snakepit.Error.PythonException.from_error()
  end

  @doc """
  Returns the fixed category for a reason, or `nil` when the reason has none.

      iex> Snakepit.Error.category_for_reason(:queue_timeout)
      :timeout
      iex> Snakepit.Error.category_for_reason(:pool_saturated)
      :pool
      iex> Snakepit.Error.category_for_reason(:something_else)
      nil
  """
  @spec category_for_reason(atom()) :: category() | nil
  def category_for_reason(reason) when reason in @timeout_reasons, do: :timeout
  def category_for_reason(reason) when reason in @pool_reasons, do: :pool
  def category_for_reason(reason) when is_atom(reason), do: nil

  @doc "Lists the valid categories."
  @spec categories() :: [category()]
  def categories, do: @categories

  defp resolve_category(category, reason) do
    case {category_for_reason(reason), category in @categories} do
      {nil, true} -> category
      {nil, false} -> :worker
      {fixed, _} -> fixed
    end
  end

  defp prefer_caller(:details, native, caller), do: Map.merge(native, Map.new(caller))
  defp prefer_caller(_key, native, nil), do: native
  defp prefer_caller(_key, _native, caller), do: caller

  defp extra_get(extra, key) do
    extra
    |> Map.get(Atom.to_string(key), Map.get(extra, key))
    |> blank_to_nil()
  end

  defp blank_to_nil(""), do: nil
  defp blank_to_nil(value), do: value

  defp native_message(message) when is_binary(message) or is_nil(message), do: message
  defp native_message(message) when is_list(message), do: List.to_string(message)
  defp native_message(message), do: inspect(message)

  defp message_text(message, _reason) when is_binary(message) and message != "", do: message

  defp message_text(_message, reason),
    do: reason |> Atom.to_string() |> String.replace("_", " ")

  defp grpc_status(status) when is_integer(status), do: status

  defp grpc_status(status) when is_binary(status) do
    case Integer.parse(status) do
      {code, ""} -> code
      _ -> nil
    end
  end

  defp grpc_status(_status), do: nil

  defp prefix_type(message, type) do
    case String.starts_with?(message, type <> ":") do
      true -> message
      false -> type <> ": " <> message
    end
  end

  defimpl String.Chars do
    def to_string(error), do: Snakepit.Error.format(error)
  end

  @doc """
  Renders an error (or a Python exception struct) as upstream Snakepit does:
  `"[category] message"`, then `"Details: ..."`, the gRPC status and the
  Python traceback when present. `to_string/1` and string interpolation use it.
  """
  @spec format(t() | Snakepit.Error.PythonException.any_t()) :: String.t()
  def format(%{category: category, message: message} = error) do
    details = Map.get(error, :details) || %{}
    grpc_status = Map.get(error, :grpc_status)
    traceback = Map.get(error, :python_traceback)

    IO.iodata_to_binary([
      "[#{category}] ",
      format_message(error, message),
      if(map_size(details) > 0, do: ["\nDetails: ", inspect(details)], else: []),
      if(grpc_status, do: ["\ngRPC Status: ", Kernel.to_string(grpc_status)], else: []),
      if(traceback, do: ["\n\nPython Traceback:\n", traceback], else: [])
    ])
  end

  defp format_message(%__MODULE__{}, message), do: message || ""

  defp format_message(%{python_type: type}, message) when is_binary(type) and type != "",
    do: prefix_type(message || "", type)

  defp format_message(_error, message), do: message || ""
end
