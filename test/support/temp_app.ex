defmodule Snakepit.TempApp do
  @moduledoc """
  A throwaway Mix application that depends on this checkout by path, for
  running the `snakepit.*` tasks the way a user does: each `mix` call is
  its own OS process in the app's directory.
  """

  @mix_exs """
  defmodule HostApp.MixProject do
    use Mix.Project

    def project do
      [app: :host_app, version: "0.1.0", deps: [{:snakepit, path: System.fetch_env!("SNAKEPIT_PATH")}]]
    end

    def application, do: [extra_applications: [:logger]]
  end
  """

  @doc """
  Creates the app with `config` as `config/config.exs` and the fixture
  package `envprobe` (test/fixtures/app_python) in its `priv/python`, and
  compiles it. Returns its directory.
  """
  @spec create!(String.t()) :: String.t()
  def create!(config) do
    dir = Path.join(System.tmp_dir!(), "snakepit_app_#{System.unique_integer([:positive])}")
    File.mkdir_p!(Path.join(dir, "config"))
    File.write!(Path.join(dir, "mix.exs"), @mix_exs)
    File.write!(Path.join(dir, "config/config.exs"), config)
    File.mkdir_p!(Path.join(dir, "priv/python"))
    File.cp_r!(Path.expand("../fixtures/app_python", __DIR__), Path.join(dir, "priv/python"))
    {output, 0} = mix(dir, ["compile"])
    _ = output
    dir
  end

  @doc """
  Runs `mix ARGS` in the app: `{output, exit_status}`, stderr merged unless
  `stderr: false`. The environment is this one without `VIRTUAL_ENV` and
  `SNAKEPIT_PYTHON`, with `MIX_ENV=dev`, plus `env`.
  """
  @spec mix(String.t(), [String.t()], [{String.t(), String.t() | nil}], keyword()) ::
          {String.t(), non_neg_integer()}
  def mix(dir, args, env \\ [], opts \\ []) do
    System.cmd("mix", args,
      cd: dir,
      stderr_to_stdout: Keyword.get(opts, :stderr, true),
      env: base_env() ++ env
    )
  end

  @doc "The environment `mix/4` starts from."
  @spec base_env() :: [{String.t(), String.t() | nil}]
  def base_env do
    [
      {"SNAKEPIT_PATH", File.cwd!()},
      {"MIX_ENV", "dev"},
      {"VIRTUAL_ENV", nil},
      {"SNAKEPIT_PYTHON", nil}
    ]
  end

  @doc "A fake virtual environment: `dir/bin/python3` linked to the system interpreter."
  @spec fake_venv!(String.t()) :: String.t()
  def fake_venv!(dir) do
    File.mkdir_p!(Path.join(dir, "bin"))
    python = Path.join([dir, "bin", "python3"])
    File.rm(python)
    File.ln_s!("/usr/bin/python3", python)

    File.write!(
      Path.join(dir, "pyvenv.cfg"),
      "home = /usr/bin\ninclude-system-site-packages = true\n"
    )

    python
  end
end
