defmodule Snakepit.EncoderFuzzTest do
  use Snakepit.PoolCase, async: false

  # Random argument maps (Snakepit.RandomTerms) through the built-in echo
  # tool on the application's :default pool. A fixed seed here; `make
  # fuzz-terms` sets SNAKEPIT_FUZZ_SEED (printed) and SNAKEPIT_FUZZ_ITERATIONS.
  # Each iteration seeds :rand with {seed, iteration}, so a failure repeats
  # on its own with the seed and iteration it reports.

  alias Snakepit.RandomTerms

  @default_seed 20_261_126
  @default_iterations 1000
  @call_timeout 30_000

  @tag timeout: :infinity
  test "random terms: valid ones round-trip through echo, invalid ones are :validation by path" do
    seed = env_integer("SNAKEPIT_FUZZ_SEED", @default_seed)
    iterations = env_integer("SNAKEPIT_FUZZ_ITERATIONS", @default_iterations)
    os_pids = worker_os_pids()

    counts =
      Enum.reduce(1..iterations, %{valid: 0, invalid: 0}, fn iteration, counts ->
        :rand.seed(:exsss, {seed, iteration, 0})
        args = RandomTerms.args()
        expected = RandomTerms.expect(args)
        outcome = call_echo(args)

        context =
          "seed #{seed} iteration #{iteration}\nargs: #{inspect(args, limit: 50, printable_limit: 300)}"

        kind = check(expected, outcome, context)
        Map.update!(counts, kind, &(&1 + 1))
      end)

    # The generator must keep exercising both halves of the contract.
    assert counts.valid >= div(iterations, 5), inspect(counts)
    assert counts.invalid >= div(iterations, 5), inspect(counts)
    assert worker_os_pids() == os_pids, "a worker was replaced during the run (seed #{seed})"
    assert {:ok, %{"message" => "pong"}} = Snakepit.execute("ping", %{})
  end

  defp check({:ok, value}, outcome, context) do
    case outcome do
      {:returned, {:ok, %{"echoed" => result}}} ->
        assert result === value,
               "#{context}\nexpected: #{inspect(value, limit: 50)}\ngot: #{inspect(result, limit: 50)}"

      other ->
        flunk(
          "#{context}\nexpected {:ok, #{inspect(value, limit: 50)}}\ngot: #{inspect(other, limit: 50)}"
        )
    end

    :valid
  end

  defp check({:invalid, paths}, outcome, context) do
    case outcome do
      {:returned,
       {:error, %Snakepit.Error{category: :validation, details: %{path: path}} = error}} ->
        assert path in paths,
               "#{context}\nerror names #{inspect(path)}, expected one of #{inspect(paths)}: #{error.message}"

        assert String.starts_with?(error.message, path <> " "), "#{context}\n#{error.message}"

      other ->
        flunk(
          "#{context}\nexpected a :validation error naming one of #{inspect(paths)}\ngot: #{inspect(other, limit: 50)}"
        )
    end

    :invalid
  end

  # In a task, so that a raise or a hang is reported with its seed instead
  # of taking the test down with it.
  defp call_echo(args) do
    task =
      Task.async(fn ->
        try do
          {:returned, Snakepit.execute("echo", args, timeout: @call_timeout)}
        catch
          kind, reason -> {:raised, kind, reason, __STACKTRACE__}
        end
      end)

    case Task.yield(task, 2 * @call_timeout) || Task.shutdown(task, :brutal_kill) do
      {:ok, outcome} -> outcome
      {:exit, reason} -> {:exited, reason}
      nil -> :hung
    end
  end

  defp worker_os_pids do
    {:ok, workers} = Snakepit.Pool.workers(:default)
    workers |> Enum.map(& &1.os_pid) |> Enum.sort()
  end

  defp env_integer(name, default) do
    case System.get_env(name, "") do
      "" -> default
      text -> String.to_integer(text)
    end
  end
end
