defmodule Snakepit.RetryPolicy do
  @moduledoc """
  When to retry and how long to wait.

      policy = Snakepit.RetryPolicy.new(max_attempts: 4, backoff_ms: [100, 200, 400, 800], jitter: true)
      Snakepit.RetryPolicy.should_retry?(policy, attempt)
      Snakepit.RetryPolicy.backoff_for_attempt(policy, attempt)
      Snakepit.RetryPolicy.retry_for_error?(policy, {:error, :timeout})

  Fields (defaults): `max_attempts` (3, attempts in all), `backoff_ms`
  (`[100, 200, 400, 800, 1600]`, the wait after attempt n is its nth entry,
  the last one beyond it), `base_backoff_ms` (100) and `backoff_multiplier`
  (2.0) for an exponential wait when `backoff_ms` is empty, `max_backoff_ms`
  (30 000), `jitter` (false) with `jitter_factor` (0.25, ± that fraction),
  `retriable_errors` (`[:timeout, :unavailable, :connection_refused,
  :worker_crash]` or `:all`).
  """

  @type t :: %__MODULE__{
          max_attempts: pos_integer(),
          backoff_ms: [non_neg_integer()],
          base_backoff_ms: non_neg_integer(),
          backoff_multiplier: float(),
          max_backoff_ms: non_neg_integer(),
          jitter: boolean(),
          jitter_factor: float(),
          retriable_errors: [atom()] | :all
        }

  defstruct max_attempts: 3,
            backoff_ms: [100, 200, 400, 800, 1600],
            base_backoff_ms: 100,
            backoff_multiplier: 2.0,
            max_backoff_ms: 30_000,
            jitter: false,
            jitter_factor: 0.25,
            retriable_errors: [:timeout, :unavailable, :connection_refused, :worker_crash]

  @doc "A policy from options (the fields above); unknown keys raise `KeyError`."
  @spec new(keyword()) :: t()
  def new(opts \\ []) when is_list(opts), do: struct!(__MODULE__, opts)

  @doc "Whether another attempt may follow attempt number `attempt` (1-based)."
  @spec should_retry?(t(), non_neg_integer()) :: boolean()
  def should_retry?(%__MODULE__{max_attempts: max}, attempt), do: attempt < max

  @doc """
  Whether a call result is a retriable error: `{:error, reason}` with
  `reason` in `retriable_errors`. A `Snakepit.Error` counts by its reason;
  a timeout category as `:timeout`, a worker that died as `:worker_crash`.
  """
  @spec retry_for_error?(t(), term()) :: boolean()
  def retry_for_error?(%__MODULE__{retriable_errors: :all}, {:error, _}), do: true

  def retry_for_error?(%__MODULE__{retriable_errors: errors}, {:error, reason}),
    do: error_reason(reason) in errors

  def retry_for_error?(%__MODULE__{}, _result), do: false

  @doc "The wait in ms after attempt number `attempt` (1-based), jittered if enabled."
  @spec backoff_for_attempt(t(), pos_integer()) :: non_neg_integer()
  def backoff_for_attempt(%__MODULE__{} = policy, attempt) when attempt >= 1 do
    delay =
      case policy.backoff_ms do
        [] -> round(policy.base_backoff_ms * :math.pow(policy.backoff_multiplier, attempt - 1))
        list -> Enum.at(list, attempt - 1, List.last(list))
      end
      |> min(policy.max_backoff_ms)

    if policy.jitter, do: jitter(delay, policy.jitter_factor), else: delay
  end

  defp error_reason(reason) when is_atom(reason), do: reason
  defp error_reason(%{category: :timeout}), do: :timeout
  defp error_reason(%{details: %{reason: :worker_exited}}), do: :worker_crash
  defp error_reason(%{details: %{reason: reason}}) when is_atom(reason), do: reason
  defp error_reason(_reason), do: nil

  defp jitter(delay, factor) do
    range = trunc(delay * factor)
    max(delay + :rand.uniform(2 * range + 1) - range - 1, 0)
  end
end
