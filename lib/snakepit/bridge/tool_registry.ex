defmodule Snakepit.Bridge.ToolRegistry do
  @moduledoc """
  Tools per session: Elixir functions that Python tools can call, and the
  Python tools a worker announced.

      :ok =
        Snakepit.Bridge.ToolRegistry.register_elixir_tool("session-1", "lookup_price",
          fn %{"sku" => sku} -> Prices.get(sku) end,
          %{description: "Price of a SKU", exposed_to_python: true})

  In Python, within a call of that session:
  `self.session_context.call_elixir_tool("lookup_price", sku="A-1")`;
  `self.session_context.elixir_tools` lists the tools registered with
  `exposed_to_python: true` (default false).

  Tool names are 1 to 64 characters of letters, digits, `_`, `-` and `.`,
  starting with a letter or digit; metadata is a map (or keyword list) of at
  most 32 entries and 4 KB. Registering a name twice in a session is
  `{:error, {:duplicate_tool, name}}`.

  The native runtime serves Python's calls on its private Unix socket and
  hands each one to this process, which runs the function in a supervised
  task (never on a native thread) with a timeout (`:timeout` in the
  metadata, default 30 s). A raise, an unknown tool or a timeout becomes a
  Python exception carrying the message.

  In a clustered pool (`Snakepit.Cluster`) a call may run on another node's
  worker. The session's Elixir tools stay where they were registered, on
  the caller's node: while such a call runs, Python's calls in that session
  of a tool this node does not have go to that node and run there, and
  `elixir_tools` lists that node's exposed tools too (this holds for any
  call of the session on this node while it runs).
  """
  use GenServer

  alias Snakepit.{Args, Native}
  alias Snakepit.Bridge.InternalToolSpec

  @table __MODULE__
  # {{session_id, executor_pid}, caller_node}: one row per call of a session
  # from another node running here (see with_origin/3).
  @origins Module.concat(__MODULE__, Origins)
  @origins_sweep_ms 60_000
  @default_timeout 30_000
  @remote_list_timeout 5_000
  @name_pattern ~r/^[A-Za-z0-9][A-Za-z0-9_\-\.]*$/
  @max_name_length 64
  @max_metadata_entries 32
  @max_metadata_bytes 4_096

  @type tool_fun :: (map() -> term())
  @type error ::
          {:duplicate_tool, String.t()}
          | {:invalid_tool_name, :empty | :too_long | :invalid_format | :invalid_type}
          | {:invalid_metadata, :too_many_entries | :too_large | :unsupported_type}

  @doc false
  def start_link(_opts), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @doc """
  Registers `fun` (arity 1, gets the keyword arguments as a map with string
  keys) as tool `name` of `session_id`. Metadata: `:description`,
  `:parameters`, `:exposed_to_python` (default false), `:timeout` in ms.
  """
  @spec register_elixir_tool(String.t(), String.t(), tool_fun(), map() | keyword()) ::
          :ok | {:error, error()}
  def register_elixir_tool(session_id, name, fun, metadata \\ %{}) when is_function(fun, 1) do
    GenServer.call(
      __MODULE__,
      {:register, to_string(session_id), [{:local, name, fun, metadata}]}
    )
    |> single()
  end

  @doc "Registers a Python tool `name` of worker `worker_id` in `session_id`."
  @spec register_python_tool(String.t(), String.t(), String.t(), map() | keyword()) ::
          :ok | {:error, error()}
  def register_python_tool(session_id, name, worker_id, metadata \\ %{}) do
    GenServer.call(
      __MODULE__,
      {:register, to_string(session_id), [{:remote, name, worker_id, metadata}]}
    )
    |> single()
  end

  @doc """
  Registers several Python tools at once, each a map with `:name` and
  optionally `:worker_id`, `:description`, `:parameters`, `:metadata`. All
  or none: `{:ok, names}`, or the first error with nothing registered.
  """
  @spec register_tools(String.t(), [map()]) :: {:ok, [String.t()]} | {:error, error()}
  def register_tools(session_id, specs) when is_list(specs) do
    entries =
      for spec <- specs do
        spec = Map.new(spec)

        metadata =
          spec
          |> Map.get(:metadata, %{})
          |> Map.new()
          |> Map.merge(Map.take(spec, [:description, :parameters]))

        {:remote, Map.get(spec, :name), Map.get(spec, :worker_id), metadata}
      end

    GenServer.call(__MODULE__, {:register, to_string(session_id), entries})
  end

  @doc "Removes a tool; `:ok` whether or not it existed."
  @spec unregister_elixir_tool(String.t(), String.t()) :: :ok
  def unregister_elixir_tool(session_id, name) do
    GenServer.call(__MODULE__, {:unregister, to_string(session_id), to_string(name)})
  end

  @doc "Removes every tool of a session."
  @spec cleanup_session(String.t()) :: :ok
  def cleanup_session(session_id),
    do: GenServer.call(__MODULE__, {:cleanup, to_string(session_id)})

  @doc "A tool of a session."
  @spec get_tool(String.t(), String.t()) ::
          {:ok, InternalToolSpec.t()} | {:error, {:tool_not_found, String.t(), String.t()}}
  def get_tool(session_id, name) do
    session_id = to_string(session_id)
    name = to_string(name)

    case :ets.lookup(@table, {session_id, name}) do
      [{_key, spec}] -> {:ok, spec}
      [] -> {:error, {:tool_not_found, session_id, name}}
    end
  end

  @doc "The tools of a session."
  @spec list_tools(String.t()) :: [InternalToolSpec.t()]
  def list_tools(session_id) do
    :ets.select(@table, [{{{to_string(session_id), :_}, :"$1"}, [], [:"$1"]}])
  end

  @doc "The session's Elixir tools that Python sees (`exposed_to_python: true`)."
  @spec list_exposed_elixir_tools(String.t()) :: [InternalToolSpec.t()]
  def list_exposed_elixir_tools(session_id) do
    for %InternalToolSpec{type: :local, exposed_to_python: true} = spec <- list_tools(session_id),
        do: spec
  end

  @doc """
  Runs an Elixir tool in the caller's process: `{:ok, result}`,
  `{:error, {:tool_execution_failed, exception}}`, `{:error, {:tool_not_local, name}}`
  or `{:error, {:tool_not_found, session_id, name}}`.
  """
  @spec execute_local_tool(String.t(), String.t(), map()) :: {:ok, term()} | {:error, term()}
  def execute_local_tool(session_id, name, params) do
    case get_tool(session_id, name) do
      {:ok, %InternalToolSpec{type: :local, handler: fun}} ->
        try do
          {:ok, fun.(params)}
        rescue
          exception -> {:error, {:tool_execution_failed, exception}}
        end

      {:ok, %InternalToolSpec{name: name}} ->
        {:error, {:tool_not_local, name}}

      error ->
        error
    end
  end

  # ---------------------------------------------------------------- server

  @doc false
  # Runs `fun` (a call of `session_id` from `caller_node`, served here) with
  # the caller's node as the place where the session's Elixir tools live.
  # One row per such call, removed when it ends (a killed caller's row by the
  # registry's sweep), so the rows are exactly the calls running.
  @spec with_origin(term(), node(), (() -> result)) :: result when result: var
  def with_origin(session_id, caller_node, fun) do
    case session_text(session_id) do
      session_id when session_id != "" and caller_node != node() ->
        enter_origin(session_id, caller_node)

        try do
          fun.()
        after
          leave_origin(session_id)
        end

      _none_or_local ->
        fun.()
    end
  end

  # The `:session_id` forms Snakepit.execute/3 accepts; anything else is
  # refused there, so it has no tools to find.
  defp session_text(id) when is_binary(id), do: id
  defp session_text(id) when (is_atom(id) and id != nil) or is_integer(id), do: to_string(id)

  defp session_text(id) when is_list(id) do
    case :unicode.characters_to_binary(id) do
      text when is_binary(text) -> text
      _ -> ""
    end
  rescue
    ArgumentError -> ""
  end

  defp session_text(_id), do: ""

  defp enter_origin(session_id, caller_node) do
    :ets.insert(@origins, {{session_id, self()}, caller_node})
  rescue
    # No registry (the application is stopping): nothing to forward to.
    ArgumentError -> false
  end

  defp leave_origin(session_id) do
    :ets.delete(@origins, {session_id, self()})
  rescue
    ArgumentError -> false
  end

  # The nodes whose calls of the session run here, each once.
  defp origins(session_id),
    do: @origins |> :ets.match({{session_id, :_}, :"$1"}) |> List.flatten() |> Enum.uniq()

  @impl GenServer
  def init(:ok) do
    :ets.new(@table, [:named_table, :protected, :set, read_concurrency: true])
    :ets.new(@origins, [:named_table, :public, :set, write_concurrency: true])
    Process.send_after(self(), :sweep_origins, @origins_sweep_ms)
    {:ok, socket} = Native.elixir_tools_start(self())
    {:ok, %{socket: socket}}
  end

  @impl GenServer
  def handle_call({:register, session_id, entries}, _from, state) do
    with {:ok, specs} <- build_all(entries),
         :ok <- insert_all(session_id, specs) do
      {:reply, {:ok, Enum.map(specs, & &1.name)}, state}
    else
      {:error, _} = error -> {:reply, error, state}
    end
  end

  def handle_call({:unregister, session_id, name}, _from, state) do
    :ets.delete(@table, {session_id, name})
    {:reply, :ok, state}
  end

  def handle_call({:cleanup, session_id}, _from, state) do
    :ets.match_delete(@table, {{session_id, :_}, :_})
    {:reply, :ok, state}
  end

  @impl GenServer
  def handle_info({:snakepit_elixir_call, id, :execute, session_id, name, params}, state) do
    origins = if :ets.member(@table, {session_id, name}), do: [], else: origins(session_id)

    {:ok, _} =
      Task.Supervisor.start_child(Snakepit.Bridge.TaskSupervisor, fn ->
        params = built_params(params)

        reply(id, run_first(origins, session_id, name, params))
      end)

    {:noreply, state}
  end

  def handle_info({:snakepit_elixir_call, id, :list, session_id, _name, _params}, state) do
    case origins(session_id) do
      [] ->
        Native.elixir_tools_list_reply(id, exposed_pairs(session_id))

      origins ->
        {:ok, _} =
          Task.Supervisor.start_child(Snakepit.Bridge.TaskSupervisor, fn ->
            Native.elixir_tools_list_reply(id, exposed_pairs(session_id, origins))
          end)
    end

    {:noreply, state}
  end

  # Rows of calls whose executor was killed (its `after` never ran).
  def handle_info(:sweep_origins, state) do
    for [{_session_id, pid} = key] <- :ets.match(@origins, {:"$1", :_}),
        not Process.alive?(pid),
        do: :ets.delete(@origins, key)

    Process.send_after(self(), :sweep_origins, @origins_sweep_ms)
    {:noreply, state}
  end

  # Python telemetry arrives on the same socket; it is emitted elsewhere so
  # slow telemetry handlers never hold up tool calls.
  def handle_info({:snakepit_python_telemetry, _, _, _, _, _, _} = batch, state) do
    Snakepit.Bridge.PythonTelemetry.forward(batch)
    {:noreply, state}
  end

  @doc false
  # Runs tool `name` of `session_id` registered on this node, for Python:
  # {:ok, value}, {:error, message} or {:not_found, message}. Called here, or
  # by another node serving a call of the session (run_at/4).
  @spec run_registered(String.t(), String.t(), map()) ::
          {:ok, term()} | {:error, String.t()} | {:not_found, String.t()}
  def run_registered(session_id, name, params) do
    case get_tool(session_id, name) do
      {:ok, %InternalToolSpec{type: :local, handler: fun, metadata: metadata}} ->
        run(fun, params, name, Map.get(metadata, :timeout, @default_timeout))

      {:ok, %InternalToolSpec{}} ->
        {:error, "tool #{inspect(name)} is not an Elixir tool"}

      {:error, _not_found} ->
        known = session_id |> list_tools() |> Enum.map(& &1.name)

        {:not_found,
         "unknown Elixir tool #{inspect(name)} for session #{inspect(session_id)}; registered: #{inspect(known)}"}
    end
  end

  # Here when registered here, else on the first node (of those whose calls
  # of the session run here) that has it; not found: this node's answer.
  defp run_first([], session_id, name, params), do: run_registered(session_id, name, params)

  defp run_first([origin | rest], session_id, name, params) do
    case run_at(origin, session_id, name, params) do
      {:not_found, _} -> run_first(rest, session_id, name, params)
      result -> result
    end
  end

  # The tool's own timeout bounds the run there; a lost node ends the wait.
  defp run_at(origin, session_id, name, params) do
    case :erpc.call(origin, __MODULE__, :run_registered, [session_id, name, params], :infinity) do
      {tag, _} = result when tag in [:ok, :error, :not_found] -> result
      other -> {:error, "Elixir tool #{name} on node #{origin} answered #{inspect(other)}"}
    end
  catch
    kind, reason ->
      {:error,
       "Elixir tool #{name} of session #{inspect(session_id)} on node #{origin} failed: " <>
         Exception.format_banner(kind, reason)}
  end

  @doc false
  # {name, description} of the session's tools Python sees, registered here.
  @spec exposed_pairs(String.t()) :: [{String.t(), String.t()}]
  def exposed_pairs(session_id),
    do: for(spec <- list_exposed_elixir_tools(session_id), do: {spec.name, spec.description})

  # Those of this node and of the nodes whose calls of the session run here
  # (an unreachable node adds none).
  defp exposed_pairs(session_id, origins) do
    remote =
      for origin <- origins,
          pair <- remote_pairs(origin, session_id),
          do: pair

    Enum.uniq_by(exposed_pairs(session_id) ++ remote, &elem(&1, 0))
  end

  defp remote_pairs(origin, session_id) do
    :erpc.call(origin, __MODULE__, :exposed_pairs, [session_id], @remote_list_timeout)
  catch
    _kind, _reason -> []
  end

  # Parameters with a map too large to build off a scheduler arrive as JSON
  # (see c_src/nif/term_builder.hpp) and are built in the tool's task.
  defp built_params({:json, params}), do: Native.decode_params(params)
  defp built_params(params), do: params

  # A result holding structs is converted (calendar types to ISO 8601) and
  # sent again; after one conversion no struct is left.
  defp reply(id, {:ok, value} = result) do
    with :needs_preprocess <- Native.elixir_tool_reply(id, result) do
      case Args.prepare(value, "result") do
        {:ok, prepared} -> Native.elixir_tool_reply(id, {:ok, prepared})
        {:error, message, _path} -> Native.elixir_tool_reply(id, {:error, message})
      end
    end
  end

  defp reply(id, error), do: Native.elixir_tool_reply(id, error)

  defp single({:ok, [_name]}), do: :ok
  defp single({:error, _} = error), do: error

  defp build_all(entries) do
    Enum.reduce_while(entries, {:ok, []}, fn entry, {:ok, acc} ->
      case build(entry) do
        {:ok, spec} ->
          if Enum.any?(acc, &(&1.name == spec.name)),
            do: {:halt, {:error, {:duplicate_tool, spec.name}}},
            else: {:cont, {:ok, [spec | acc]}}

        error ->
          {:halt, error}
      end
    end)
    |> case do
      {:ok, specs} -> {:ok, Enum.reverse(specs)}
      error -> error
    end
  end

  defp build({type, name, target, metadata}) do
    with {:ok, name} <- validate_name(name),
         {:ok, metadata} <- validate_metadata(metadata) do
      spec = %InternalToolSpec{
        name: name,
        type: type,
        parameters: Map.get(metadata, :parameters, []),
        description: to_string(Map.get(metadata, :description, "")),
        metadata: metadata
      }

      case type do
        :local ->
          {:ok,
           %{
             spec
             | handler: target,
               exposed_to_python: Map.get(metadata, :exposed_to_python) == true
           }}

        :remote ->
          {:ok, %{spec | worker_id: target}}
      end
    end
  end

  # All or none: the table is only written by this process.
  defp insert_all(session_id, specs) do
    case Enum.find(specs, &:ets.member(@table, {session_id, &1.name})) do
      nil ->
        :ets.insert(@table, for(spec <- specs, do: {{session_id, spec.name}, spec}))
        :ok

      taken ->
        {:error, {:duplicate_tool, taken.name}}
    end
  end

  defp validate_name(name) when is_binary(name) do
    name = String.trim(name)

    cond do
      name == "" -> {:error, {:invalid_tool_name, :empty}}
      byte_size(name) > @max_name_length -> {:error, {:invalid_tool_name, :too_long}}
      not Regex.match?(@name_pattern, name) -> {:error, {:invalid_tool_name, :invalid_format}}
      true -> {:ok, name}
    end
  end

  defp validate_name(name) when is_atom(name) and name not in [nil, true, false],
    do: validate_name(Atom.to_string(name))

  defp validate_name(_name), do: {:error, {:invalid_tool_name, :invalid_type}}

  defp validate_metadata(nil), do: {:ok, %{}}

  defp validate_metadata(metadata) when is_map(metadata) or is_list(metadata) do
    metadata = Map.new(metadata)

    cond do
      map_size(metadata) > @max_metadata_entries ->
        {:error, {:invalid_metadata, :too_many_entries}}

      byte_size(:erlang.term_to_binary(metadata)) > @max_metadata_bytes ->
        {:error, {:invalid_metadata, :too_large}}

      true ->
        {:ok, metadata}
    end
  rescue
    ArgumentError -> {:error, {:invalid_metadata, :unsupported_type}}
  end

  defp validate_metadata(_metadata), do: {:error, {:invalid_metadata, :unsupported_type}}

  # The tool runs in its own process so a timeout can kill it.
  defp run(fun, params, name, timeout) do
    task =
      Task.Supervisor.async_nolink(Snakepit.Bridge.TaskSupervisor, fn ->
        try do
          {:ok, fun.(params)}
        rescue
          exception ->
            {:error, "Elixir tool #{name} raised " <> Exception.format_banner(:error, exception)}
        catch
          kind, reason ->
            {:error, "Elixir tool #{name} failed: " <> Exception.format_banner(kind, reason)}
        end
      end)

    case Task.yield(task, timeout) || Task.shutdown(task, :brutal_kill) do
      {:ok, reply} -> reply
      {:exit, reason} -> {:error, "Elixir tool #{name} exited: #{inspect(reason)}"}
      nil -> {:error, "Elixir tool #{name} timed out after #{timeout} ms"}
    end
  end
end
