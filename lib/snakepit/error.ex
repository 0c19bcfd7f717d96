defmodule Snakepit.Error do
  @moduledoc """
  The error returned (or raised) by every Snakepit call.

      %Snakepit.Error{
        category: :python_error,
        message: "bad input",
        details: %{reason: :python_exception, python_type: "ValueError", command: "predict", pool_name: :ml},
        python_traceback: "Traceback (most recent call last): ...",
        grpc_status: nil
      }

  `category` is one of `:worker`, `:timeout`, `:python_error`, `:grpc_error`,
  `:validation` or `:pool`. `details` always carries `:reason` (an atom) and,
  when known, `:command` and `:pool_name`. Python errors also carry
  `details.python_type` (for example `"ValueError"`) and `python_traceback`.

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

  @typedoc "Structured context; `:reason` is always present."
  @type details :: %{required(:reason) => atom(), optional(atom()) => term()}

  @type t :: %__MODULE__{
          category: category(),
          message: String.t(),
          details: details(),
          python_traceback: String.t() | nil,
          grpc_status: non_neg_integer() | nil
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
  Converts a native error tuple into an error.

  The tuple is `{category, reason, message, extra}` (a 3-tuple without
  `extra` is accepted too). `extra` may hold, with string or atom keys:
  `"python_type"`, `"traceback"`, `"grpc_status"`, `"path"` and
  `"worker_id"`. The category is taken from `category_for_reason/1` when the
  reason has a fixed category, otherwise from the tuple (an unknown category
  becomes `:worker`).

  `opts` accepts the same options as `new/4`, typically `:command` and
  `:pool_name`; they win over values found in `extra`.
  """
  @spec from_native(tuple(), keyword()) :: t()
  def from_native(native, opts \\ [])

  def from_native({category, reason, message}, opts),
    do: from_native({category, reason, message, %{}}, opts)

  def from_native({category, reason, message, extra}, opts)
      when is_atom(category) and is_atom(reason) and is_map(extra) and is_list(opts) do
    native_details =
      [path: extra_get(extra, :path), worker_id: extra_get(extra, :worker_id)]
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
end
