defmodule Snakepit.GRPC.Listener do
  @moduledoc """
  A TCP address for the gRPC server Python reaches Elixir through, for
  Python processes that are not Snakepit's workers.

  Upstream Snakepit runs an Elixir gRPC server that scripts start and hand
  to a Python program of their own (upstream's
  `examples/bidirectional_tools_demo_auto.exs` with
  `examples/python_elixir_tools_demo.py`):

      {:ok, _pid} = Snakepit.GRPC.Listener.start_link(name: nil)
      {:ok, %{host: host, port: port}} = Snakepit.GRPC.Listener.await_ready(5_000)
      # SNAKEPIT_GRPC_ADDRESS=host:port python3 python_elixir_tools_demo.py

  Here that server is the native runtime's, on a private unix socket
  (`Snakepit.Python.elixir_tools_socket/0`; `GetExposedElixirTools`,
  `ExecuteElixirTool`, `EmitTelemetry`; other RPCs answer UNIMPLEMENTED).
  This process listens on a TCP port of the configured `grpc_listener`
  host (default `127.0.0.1`, never all interfaces) and relays each
  connection's bytes to that socket, so a client given `host:port` reaches
  the Elixir tools of the session it names. Pools never need it: workers
  use the socket directly.

  Options of `start_link/1`: `:name` (default `#{inspect(__MODULE__)}`,
  `nil` for none) and `:port` (default 0: a free port).
  """
  use GenServer

  @info_key {__MODULE__, :listener_info}
  @poll_ms 10

  @type listener_info :: %{
          pid: pid(),
          host: String.t(),
          bind_host: String.t(),
          port: :inet.port_number(),
          mode: :external,
          target: String.t()
        }

  @doc "Starts the listener; see the module documentation for the options."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    case Keyword.get(opts, :name, __MODULE__) do
      nil -> GenServer.start_link(__MODULE__, opts)
      name -> GenServer.start_link(__MODULE__, opts, name: name)
    end
  end

  @doc """
  Waits until a listener is accepting connections and returns where:
  `{:ok, %{host, port, bind_host, pid, mode, target}}`, or `{:error,
  :timeout}` after `timeout` ms.
  """
  @spec await_ready(non_neg_integer()) :: {:ok, listener_info()} | {:error, :timeout}
  def await_ready(timeout \\ 5_000) when is_integer(timeout) and timeout >= 0,
    do: await_info(System.monotonic_time(:millisecond) + timeout)

  @doc "The running listener's address as `host:port`, or `nil`."
  @spec address() :: String.t() | nil
  def address do
    case listener_info() do
      %{host: host, port: port} -> "#{host}:#{port}"
      nil -> nil
    end
  end

  @doc "The running listener's info (see `await_ready/1`), or `nil`."
  @spec listener_info() :: listener_info() | nil
  def listener_info do
    case :persistent_term.get(@info_key, nil) do
      %{pid: pid} = info -> if Process.alive?(pid), do: info
      nil -> nil
    end
  end

  defp await_info(deadline) do
    case listener_info() do
      %{} = info ->
        {:ok, info}

      nil ->
        if System.monotonic_time(:millisecond) >= deadline do
          {:error, :timeout}
        else
          Process.sleep(@poll_ms)
          await_info(deadline)
        end
    end
  end

  @impl GenServer
  def init(opts) do
    Process.flag(:trap_exit, true)
    host = Snakepit.Config.grpc_listener_config!().host
    target = Snakepit.Python.elixir_tools_socket()

    with {:ok, ip} <- :inet.getaddr(String.to_charlist(host), :inet),
         {:ok, listen} <-
           :gen_tcp.listen(Keyword.get(opts, :port, 0), [
             :binary,
             ip: ip,
             active: false,
             reuseaddr: true
           ]),
         {:ok, port} <- :inet.port(listen) do
      acceptor = spawn_link(fn -> accept_loop(listen, target) end)
      :ok = :gen_tcp.controlling_process(listen, acceptor)

      info = %{
        pid: self(),
        host: host,
        bind_host: host,
        port: port,
        mode: :external,
        target: "unix:" <> target
      }

      :persistent_term.put(@info_key, info)
      {:ok, %{listen: listen, acceptor: acceptor}}
    else
      {:error, reason} -> {:stop, {:listen_failed, host, reason}}
    end
  end

  @impl GenServer
  def handle_info({:EXIT, acceptor, reason}, %{acceptor: acceptor} = state),
    do: {:stop, reason, state}

  # A relay that ended (its connection closed).
  def handle_info({:EXIT, _pid, _reason}, state), do: {:noreply, state}

  @impl GenServer
  def terminate(_reason, state) do
    :gen_tcp.close(state.listen)

    case :persistent_term.get(@info_key, nil) do
      %{pid: pid} when pid == self() -> :persistent_term.erase(@info_key)
      _other -> :ok
    end
  end

  # Each connection gets its own relay, linked so none outlives the listener.
  defp accept_loop(listen, target) do
    case :gen_tcp.accept(listen) do
      {:ok, client} ->
        relay = spawn_link(fn -> start_relay(target) end)

        case :gen_tcp.controlling_process(client, relay) do
          :ok -> send(relay, {:client, client})
          {:error, _} -> :gen_tcp.close(client)
        end

        accept_loop(listen, target)

      {:error, :closed} ->
        :ok

      {:error, reason} ->
        exit({:accept_failed, reason})
    end
  end

  defp start_relay(target) do
    receive do
      {:client, client} ->
        case :gen_tcp.connect({:local, target}, 0, [:binary, active: :once]) do
          {:ok, server} ->
            case :inet.setopts(client, active: :once) do
              :ok -> relay(client, server)
              {:error, _closed} -> close(client, server)
            end

          {:error, _} ->
            # The client sees the connection close: the runtime is not up.
            :gen_tcp.close(client)
        end
    end
  end

  # Bytes pass both ways unchanged (gRPC's HTTP/2 frames); either side
  # closing ends both.
  defp relay(client, server) do
    receive do
      {:tcp, ^client, data} ->
        forward(server, client, data, client, server)

      {:tcp, ^server, data} ->
        forward(client, server, data, client, server)

      {:tcp_closed, _socket} ->
        close(client, server)

      {:tcp_error, _socket, _reason} ->
        close(client, server)
    end
  end

  defp forward(to, from, data, client, server) do
    with :ok <- :gen_tcp.send(to, data),
         :ok <- :inet.setopts(from, active: :once) do
      relay(client, server)
    else
      {:error, _} -> close(client, server)
    end
  end

  defp close(client, server) do
    :gen_tcp.close(client)
    :gen_tcp.close(server)
  end
end
