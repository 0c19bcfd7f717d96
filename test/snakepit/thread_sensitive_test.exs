defmodule Snakepit.ThreadSensitiveTest do
  # `thread_sensitive: true` runs a tool on the worker's main thread, as
  # upstream's option does (signal handlers need it); other calls run on a
  # tool thread.
  use Snakepit.PoolCase, async: false
  # `make test` runs these again on the worker's grpc.server fallback.
  @moduletag :worker_path

  setup do
    pool =
      start_pool!(
        name: :thread_sensitive,
        pool_size: 1,
        fixture_adapter: "MainThreadAdapter"
      )

    %{pool: pool}
  end

  test "thread_sensitive: true runs the tool on the main thread", %{pool: pool} do
    assert {:ok, false} = Snakepit.execute("on_main_thread", %{}, pool_name: pool)

    assert {:ok, true} =
             Snakepit.execute("on_main_thread", %{}, pool_name: pool, thread_sensitive: true)

    assert {:ok, true} =
             Snakepit.execute("on_main_thread", %{}, pool_name: pool, thread_sensitive: "true")

    assert {:ok, false} =
             Snakepit.execute("on_main_thread", %{}, pool_name: pool, thread_sensitive: false)
  end

  test "a tool that installs a signal handler works only thread-sensitive", %{pool: pool} do
    assert {:error, %Snakepit.Error.ValueError{message: message}} =
             Snakepit.execute("install_signal_handler", %{}, pool_name: pool)

    assert message =~ "main thread"

    assert {:ok, "installed"} =
             Snakepit.execute("install_signal_handler", %{},
               pool_name: pool,
               thread_sensitive: true
             )
  end

  test "a bad thread_sensitive value is a validation error naming the option", %{pool: pool} do
    assert {:error, %Snakepit.Error{category: :validation, message: message}} =
             Snakepit.execute("on_main_thread", %{}, pool_name: pool, thread_sensitive: :yes)

    assert message =~ "thread_sensitive must be true or false"
  end
end
