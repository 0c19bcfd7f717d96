defmodule Snakepit.Native do
  @moduledoc false
  # NIF stubs; the implementation is c_src/nif/snakepit_nif.cpp.

  @on_load :load_nif

  @doc false
  def load_nif do
    path = :code.priv_dir(:snakepit) |> Path.join("snakepit_nif") |> String.to_charlist()
    :erlang.load_nif(path, 0)
  end

  def runtime_info, do: :erlang.nif_error(:nif_not_loaded)
  def pool_start(_config, _owner), do: :erlang.nif_error(:nif_not_loaded)
  def submit(_pool, _tool, _args, _opts, _ref), do: :erlang.nif_error(:nif_not_loaded)
  def grant(_pool, _request_id, _credits), do: :erlang.nif_error(:nif_not_loaded)
  def cancel(_pool, _request_id), do: :erlang.nif_error(:nif_not_loaded)
  def count_rejected(_pool), do: :erlang.nif_error(:nif_not_loaded)
  def stats(_pool), do: :erlang.nif_error(:nif_not_loaded)
  def load(_pool), do: :erlang.nif_error(:nif_not_loaded)
  def workers(_pool), do: :erlang.nif_error(:nif_not_loaded)
  def session_worker(_pool, _session_id), do: :erlang.nif_error(:nif_not_loaded)
  def session_drop(_pool, _session_id), do: :erlang.nif_error(:nif_not_loaded)
  def reports(_pool, _timeout_ms), do: :erlang.nif_error(:nif_not_loaded)
  def pool_stop(_pool), do: :erlang.nif_error(:nif_not_loaded)
  def elixir_tools_socket, do: :erlang.nif_error(:nif_not_loaded)
  def elixir_tools_start(_handler), do: :erlang.nif_error(:nif_not_loaded)
  def elixir_tool_reply(_call_id, _reply), do: :erlang.nif_error(:nif_not_loaded)
  def elixir_tools_list_reply(_call_id, _tools), do: :erlang.nif_error(:nif_not_loaded)
  def decode_result(_json), do: :erlang.nif_error(:nif_not_loaded)
  def decode_chunk(_json, _is_final), do: :erlang.nif_error(:nif_not_loaded)
  def decode_params(_params), do: :erlang.nif_error(:nif_not_loaded)
  @doc false
  # Test support: a NIF that throws (:bad_alloc, :runtime_error) or rejects
  # its argument (:bad_arg), proving the NIF boundary (c_src/nif/boundary.hpp).
  def boundary_check(_kind), do: :erlang.nif_error(:nif_not_loaded)
end
