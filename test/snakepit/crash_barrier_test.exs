defmodule Snakepit.CrashBarrierTest do
  use Snakepit.PoolCase, async: false

  alias Snakepit.CrashBarrier

  describe "with real workers" do
    setup do
      Application.put_env(:snakepit, :crash_barrier, enabled: true)
      on_exit(fn -> Application.delete_env(:snakepit, :crash_barrier) end)
      :telemetry.attach_recorder()
      on_exit(fn -> :telemetry.detach_recorder() end)

      pool =
        start_pool!(
          name: :crash_barrier,
          pool_size: 2,
          fixture_adapter: "CrashAdapter"
        )

      marker =
        Path.join(System.tmp_dir!(), "snakepit_crash_#{System.unique_integer([:positive])}")

      on_exit(fn -> File.rm(marker) end)
      %{pool: pool, marker: marker}
    end

    test "an idempotent call whose worker aborts is retried once, on another worker", ctx do
      assert {:ok, %{"pid" => pid}} =
               Snakepit.execute("crash_once", %{marker: ctx.marker},
                 pool_name: ctx.pool,
                 idempotent: true
               )

      crashed = ctx.marker |> File.read!() |> String.to_integer()
      assert pid != crashed
      refute os_alive?(crashed)
      pool = ctx.pool

      assert_receive {:telemetry_event, [:snakepit, :worker, :crash], %{attempt: 0},
                      %{
                        pool: ^pool,
                        command: "crash_once",
                        classification: class,
                        retry: true,
                        worker_id: worker_id
                      }}

      assert is_binary(worker_id)
      assert class == :abort
    end

    test "idempotent in the arguments, as upstream reads it, after a segfault", ctx do
      assert {:ok, %{"pid" => _}} =
               Snakepit.execute(
                 "crash_once",
                 %{marker: ctx.marker, signal_name: "SEGV", idempotent: true},
                 pool_name: ctx.pool
               )

      assert_receive {:telemetry_event, [:snakepit, :worker, :crash], _,
                      %{classification: class, retry: true}}

      assert class == :segfault
    end

    test "a call not marked idempotent is not retried", ctx do
      assert {:error, %Snakepit.Error{category: :worker} = error} =
               Snakepit.execute("crash_once", %{marker: ctx.marker, signal_name: "SEGV"},
                 pool_name: ctx.pool
               )

      assert error.details.reason == :worker_exited
      assert error.details.classification == :segfault
      assert error.details.exit_signal == "SIGSEGV"
      assert error.details.crash_retries == 0

      assert error.message =~
               "killed by signal SIGSEGV (Segmentation fault) while running the request"

      assert File.exists?(ctx.marker)

      assert_receive {:telemetry_event, [:snakepit, :worker, :crash], %{attempt: 0},
                      %{retry: false}}

      # The pool replaced the worker and serves.
      assert {:ok, pid} = Snakepit.execute("whoami", %{}, pool_name: ctx.pool, timeout: 15_000)
      assert is_integer(pid)
    end

    test "a call that crashes every worker it meets is retried once, then fails", ctx do
      assert {:error, %Snakepit.Error{category: :worker} = error} =
               Snakepit.execute("crash", %{signal_name: "KILL"},
                 pool_name: ctx.pool,
                 idempotent: true,
                 timeout: 15_000
               )

      assert error.details.classification == :oom
      assert error.details.crash_retries == 1

      assert_receive {:telemetry_event, [:snakepit, :worker, :crash], %{attempt: 0},
                      %{retry: true}}

      assert_receive {:telemetry_event, [:snakepit, :worker, :crash], %{attempt: 1},
                      %{retry: false}},
                     5_000
    end

    test "with the barrier disabled an idempotent call is not retried", ctx do
      Application.put_env(:snakepit, :crash_barrier, enabled: false)

      assert {:error, %Snakepit.Error{category: :worker, details: details}} =
               Snakepit.execute("crash_once", %{marker: ctx.marker},
                 pool_name: ctx.pool,
                 idempotent: true
               )

      refute Map.has_key?(details, :crash_retries)
      refute_received {:telemetry_event, [:snakepit, :worker, :crash], _, _}
    end

    test "crash_barrier: false opts a call out", ctx do
      assert {:error, %Snakepit.Error{category: :worker}} =
               Snakepit.execute("crash_once", %{marker: ctx.marker},
                 pool_name: ctx.pool,
                 idempotent: true,
                 crash_barrier: false
               )

      refute_received {:telemetry_event, [:snakepit, :worker, :crash], _, _}
    end
  end

  describe "policy" do
    defp crashed(message) do
      {:error, Snakepit.Error.new(:worker, :worker_exited, message, details: %{worker_id: "w_1"})}
    end

    test "classifies signals and exit statuses; mark_on decides what counts" do
      config = CrashBarrier.config()

      for {message, class, code} <- [
            {"worker w_1 killed by signal SIGSEGV (Segmentation fault) while running the request",
             :segfault, 139},
            {"worker w_1 killed by signal SIGBUS (Bus error) while running the request",
             :segfault, 135},
            {"worker w_1 killed by signal SIGABRT (Aborted) while running the request", :abort,
             134},
            {"worker w_1 killed by signal SIGKILL (Killed) while running the request", :oom, 137},
            {"worker w_1 exited with status 139 while running the request", :segfault, 139}
          ] do
        assert {:ok, %{classification: ^class, exit_code: ^code, worker_id: "w_1"}} =
                 CrashBarrier.crash_info(crashed(message), config)
      end

      assert :error =
               CrashBarrier.crash_info(
                 crashed(
                   "worker w_1 killed by signal SIGTERM (Terminated) while running the request"
                 ),
                 config
               )

      assert :error =
               CrashBarrier.crash_info(
                 crashed("worker w_1 exited with status 1 while running the request"),
                 config
               )

      # The exit status was lost, or the connection dropped first: cause unknown.
      assert {:ok, %{classification: :unknown, exit_code: nil}} =
               CrashBarrier.crash_info(
                 crashed("worker w_1 exited while running the request"),
                 config
               )

      assert {:ok, %{classification: :unknown}} =
               CrashBarrier.crash_info(
                 {:error,
                  Snakepit.Error.new(
                    :worker,
                    :worker_unavailable,
                    "worker w_1 went away while running the request: Socket closed"
                  )},
                 config
               )

      assert :error =
               CrashBarrier.crash_info(
                 crashed("worker w_1 exited while running the request"),
                 %{config | mark_on: [:segfault]}
               )

      assert {:ok, %{classification: :gpu, device: :cuda}} =
               CrashBarrier.crash_info(
                 crashed("worker w_1 exited with status 1 while running the request: CUDA error"),
                 config
               )

      only_segfaults = %{config | mark_on: [:segfault]}

      assert :error =
               CrashBarrier.crash_info(
                 crashed(
                   "worker w_1 killed by signal SIGABRT (Aborted) while running the request"
                 ),
                 only_segfaults
               )

      assert {:ok, %{classification: :exited, exit_code: 3}} =
               CrashBarrier.crash_info(
                 crashed("worker w_1 exited with status 3 while running the request"),
                 %{config | taint_on_exit_codes: [3]}
               )

      # The native runtime's details win over the message.
      for {details, class, code} <- [
            {%{exit_signal: "SIGSEGV"}, :segfault, 139},
            {%{exit_signal: "SIGABRT"}, :abort, 134},
            {%{exit_status: 137}, :oom, 137}
          ] do
        error =
          Snakepit.Error.new(:worker, :worker_exited, "worker w_1 ended",
            details: Map.put(details, :worker_id, "w_1")
          )

        assert {:ok, %{classification: ^class, exit_code: ^code}} =
                 CrashBarrier.crash_info({:error, error}, config)
      end

      assert :error = CrashBarrier.crash_info({:ok, 1}, config)
    end

    test "retry_allowed?, backoff and config" do
      Application.put_env(:snakepit, :crash_barrier, %{enabled: true, retry: true})
      on_exit(fn -> Application.delete_env(:snakepit, :crash_barrier) end)
      config = CrashBarrier.config(%{crash_barrier: [max_restarts: 2]})

      assert CrashBarrier.enabled?(config)
      assert config.retry == :always
      assert CrashBarrier.retry_allowed?(config, false, 1)
      refute CrashBarrier.retry_allowed?(config, false, 2)
      refute CrashBarrier.retry_allowed?(%{config | retry: :idempotent}, false, 0)
      assert CrashBarrier.retry_allowed?(%{config | retry: :idempotent}, true, 0)
      refute CrashBarrier.retry_allowed?(%{config | retry: :never}, true, 0)
      assert CrashBarrier.retry_backoff(config, 1) == 50
      assert CrashBarrier.retry_backoff(config, 9) == 200
      assert CrashBarrier.idempotent?(%{"idempotent" => true})
      refute CrashBarrier.idempotent?(%{idempotent: "yes"})

      Application.put_env(:snakepit, :crash_barrier, retry: :sometimes)
      assert_raise ArgumentError, ~r/invalid :retry :sometimes/, fn -> CrashBarrier.config() end
    end
  end
end
