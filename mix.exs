defmodule Mix.Tasks.Compile.SnakepitNative do
  @moduledoc """
  Builds the NIF (`priv/snakepit_nif.so`) and the Python gRPC stubs by
  running `make native` in this project's own directory, so it works the
  same when Snakepit is a path or git dependency.
  """
  use Mix.Task.Compiler

  @impl Mix.Task.Compiler
  def run(_args) do
    root = Path.expand(".", __DIR__)

    case System.cmd("make", ["--no-print-directory", "-s", "-C", root, "native"],
           stderr_to_stdout: true,
           into: IO.stream(:stdio, :line)
         ) do
      {_, 0} -> {:ok, []}
      {_, status} -> Mix.raise("make native failed with exit status #{status} (see output above)")
    end
  end
end

defmodule Snakepit.MixProject do
  use Mix.Project

  def project do
    [
      app: :snakepit,
      version: "0.13.0",
      elixir: "~> 1.14",
      compilers: [:snakepit_native | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: []
    ]
  end

  def application do
    [mod: {Snakepit.Application, []}, extra_applications: [:logger]]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_env), do: ["lib"]
end
