defmodule Mix.Tasks.Snakepit.PythonTest do
  @shortdoc "Runs the bridge's pytest suite and the app's test/python with the pools' interpreter"

  @moduledoc """
  Runs pytest with the interpreter the pools use (`Snakepit.PythonRuntime`)
  and the workers' `PYTHONPATH` (the bridge, then the app's `priv/python`):

    * the bridge's own suite (Snakepit's `test/python`, when its sources
      are there, as with a path or git dependency);
    * the app's Python tests, `test/python`, when present.

  Exits with pytest's status: 0 when every suite passes, else the first
  non-zero one.

      mix snakepit.python_test
      mix snakepit.python_test --only app -- -k greet -x

  ## Options

    * `--only bridge` or `--only app` - run one of the two
    * everything after `--` goes to pytest
  """

  use Mix.Task

  alias Snakepit.{Python, PythonRuntime}

  @switches [only: :string]

  @impl Mix.Task
  def run(args) do
    {task_args, pytest_args} = split_args(args)
    {opts, _rest} = OptionParser.parse!(task_args, strict: @switches)
    Mix.Task.run("app.config")

    python =
      case PythonRuntime.resolve() do
        {:ok, choice} -> choice.path
        {:error, message} -> Mix.raise("snakepit.python_test: #{message}")
      end

    env = [{"PYTHONPATH", nil |> Python.python_path() |> Enum.join(":")}]
    suites = suites(opts[:only])

    if suites == [], do: Mix.raise("snakepit.python_test: no Python tests found (test/python)")

    status =
      Enum.reduce(suites, 0, fn {label, dir, cwd}, status ->
        Mix.shell().info(
          "==> #{label}: #{python} -m pytest #{Enum.join([dir | pytest_args], " ")}"
        )

        {_, suite_status} =
          System.cmd(python, ["-m", "pytest", dir | pytest_args],
            cd: cwd,
            env: env,
            stderr_to_stdout: true,
            into: IO.stream(:stdio, :line)
          )

        if status == 0, do: suite_status, else: status
      end)

    if status != 0 do
      Mix.shell().error("snakepit.python_test: pytest exited with status #{status}")
      exit({:shutdown, status})
    end
  end

  defp split_args(args) do
    case Enum.split_while(args, &(&1 != "--")) do
      {task_args, ["--" | pytest_args]} -> {task_args, pytest_args}
      {task_args, []} -> {task_args, []}
    end
  end

  defp suites(only) when only in [nil, "bridge", "app"] do
    app_root = File.cwd!()
    snakepit_root = snakepit_root()

    bridge =
      if only in [nil, "bridge"] and snakepit_root, do: suite("bridge", snakepit_root), else: []

    # Inside Snakepit itself the app's suite is the bridge's.
    app =
      if only in [nil, "app"] and snakepit_root != app_root, do: suite("app", app_root), else: []

    bridge ++ app
  end

  defp suites(other),
    do: Mix.raise("snakepit.python_test: --only must be bridge or app, got #{inspect(other)}")

  defp suite(label, root) do
    dir = Path.join(root, "test/python")
    if File.dir?(dir), do: [{label, dir, root}], else: []
  end

  defp snakepit_root do
    if Mix.Project.config()[:app] == :snakepit,
      do: File.cwd!(),
      else: Mix.Project.deps_paths()[:snakepit]
  end
end
