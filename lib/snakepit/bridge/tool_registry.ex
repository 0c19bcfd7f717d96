defmodule Snakepit.Bridge.ToolRegistry do
  @moduledoc """
  Elixir functions that Python tools can call.

      Snakepit.Bridge.ToolRegistry.register_elixir_tool("session-1", "lookup_price",
        fn %{"sku" => sku} -> Prices.get(sku) end,
        %{description: "Price of a SKU", exposed_to_python: true})

  In Python, within a call of that session:
  `self.session_context.call_elixir_tool("lookup_price", sku="A-1")`.

  The native runtime serves these calls on its private Unix socket and hands
  each one to this process, which runs the function in a supervised task
  (never on a native thread) with a timeout (`:timeout` in the metadata,
  default 30 s). A raise, an unknown tool or a timeout becomes a Python
  exception carrying the message.
  """
  use GenServer
  require Logger

  alias Snakepit.Native

  @table __MODULE__
  @default_timeout 30_000

  @type tool_fun :: (map() -> term())

  @doc false
  def start_link(_opts), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @doc """
  Registers `fun` (arity 1, gets the keyword arguments as a map with string
  keys) as tool `name` of `session_id`. Metadata: `:description`,
  `:exposed_to_python` (default true), `:timeout` in ms.
  """
  @spec register_elixir_tool(String.t(), String.t(), tool_fun(), map()) :: :ok
  def register_elixir_tool(session_id, name, fun, metadata \\ %{}) when is_function(fun, 1) do
    GenServer.call(
      __MODULE__,
      {:register, to_string(session_id), to_string(name), fun, Map.new(metadata)}
    )
  end

  @doc "Removes a tool; `:ok` whether or not it existed."
  @spec unregister_elixir_tool(String.t(), String.t()) :: :ok
  def unregister_elixir_tool(session_id, name) do
    GenServer.call(__MODULE__, {:unregister, to_string(session_id), to_string(name)})
  end

  @doc "The tools of a session as `{name, metadata}` pairs."
  @spec list_tools(String.t()) :: [{String.t(), map()}]
  def list_tools(session_id) do
    session_id = to_string(session_id)

    for [name, metadata] <- :ets.match(@table, {{session_id, :"$1"}, :_, :"$2"}),
        do: {name, metadata}
  end

  @impl GenServer
  def init(:ok) do
    :ets.new(@table, [:named_table, :protected, :set, read_concurrency: true])
    {:ok, socket} = Native.elixir_tools_start(self())
    {:ok, %{socket: socket}}
  end

  @impl GenServer
  def handle_call({:register, session_id, name, fun, metadata}, _from, state) do
    metadata =
      Map.merge(%{description: "", exposed_to_python: true, timeout: @default_timeout}, metadata)

    :ets.insert(@table, {{session_id, name}, fun, metadata})
    {:reply, :ok, state}
  end

  def handle_call({:unregister, session_id, name}, _from, state) do
    :ets.delete(@table, {session_id, name})
    {:reply, :ok, state}
  end

  @impl GenServer
  def handle_info({:snakepit_elixir_call, id, :execute, session_id, name, params}, state) do
    case :ets.lookup(@table, {session_id, name}) do
      [{_, fun, metadata}] ->
        {:ok, _} =
          Task.Supervisor.start_child(Snakepit.Bridge.TaskSupervisor, fn ->
            Native.elixir_tool_reply(id, run(fun, params, name, metadata.timeout))
          end)

      [] ->
        known = session_id |> list_tools() |> Enum.map(&elem(&1, 0))

        Native.elixir_tool_reply(
          id,
          {:error,
           "unknown Elixir tool #{inspect(name)} for session #{inspect(session_id)}; registered: #{inspect(known)}"}
        )
    end

    {:noreply, state}
  end

  def handle_info({:snakepit_elixir_call, id, :list, session_id, _name, _params}, state) do
    tools =
      for {name, %{exposed_to_python: true} = metadata} <- list_tools(session_id),
          do: {name, to_string(metadata.description)}

    Native.elixir_tools_list_reply(id, tools)
    {:noreply, state}
  end

  # Python telemetry arrives on the same socket; it is emitted elsewhere so
  # slow telemetry handlers never hold up tool calls.
  def handle_info({:snakepit_python_telemetry, _, _, _, _, _, _} = batch, state) do
    Snakepit.Bridge.PythonTelemetry.forward(batch)
    {:noreply, state}
  end

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
