defmodule Snakepit.Bridge.Session do
  @moduledoc """
  A session as `Snakepit.Bridge.SessionStore` returns it.

    * `id`
    * `created_at`, `last_accessed` - `System.monotonic_time(:second)` values
    * `ttl` - seconds of idleness after which the session expires
    * `last_worker_id` - the worker that served the session's latest call
      (the native session affinity sends its next calls there)
    * `metadata`, `programs` - the application's own data
    * `stats` - `%{program_count}`
  """

  @type t :: %__MODULE__{
          id: String.t(),
          created_at: integer(),
          last_accessed: integer(),
          last_worker_id: String.t() | nil,
          ttl: non_neg_integer(),
          metadata: map(),
          programs: map(),
          stats: map()
        }

  @enforce_keys [:id, :created_at, :last_accessed, :ttl]
  defstruct [
    :id,
    :created_at,
    :last_accessed,
    :ttl,
    last_worker_id: nil,
    metadata: %{},
    programs: %{},
    stats: %{program_count: 0}
  ]
end
