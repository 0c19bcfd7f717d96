defmodule Snakepit.Bridge.InternalToolSpec do
  @moduledoc """
  A tool in `Snakepit.Bridge.ToolRegistry`: a `:local` Elixir function
  (`handler`) or a `:remote` Python tool (`worker_id`), with its
  `description`, `parameters`, `metadata` and whether Python sees it
  (`exposed_to_python`, local tools only).
  """

  @type t :: %__MODULE__{
          name: String.t(),
          type: :local | :remote,
          handler: (map() -> term()) | nil,
          worker_id: String.t() | nil,
          parameters: list(),
          description: String.t(),
          metadata: map(),
          exposed_to_python: boolean()
        }

  @enforce_keys [:name, :type]
  defstruct name: nil,
            type: nil,
            handler: nil,
            worker_id: nil,
            parameters: [],
            description: "",
            metadata: %{},
            exposed_to_python: false
end
