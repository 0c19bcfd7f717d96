defmodule Mix.Tasks.Snakepit.Doctor do
  @shortdoc "Checks the Python side: interpreter, grpc, adapters, NIF, runtime dir, hardware"

  @moduledoc """
  Checks that the configured pools can start, one line per check, and exits
  non-zero when any check fails (warnings do not fail).

      mix snakepit.doctor
      mix snakepit.doctor --json

  Checks: the `:snakepit` config; the interpreter the pools will use and the
  rule that chose it (see `Snakepit.PythonRuntime`), its version and
  free-threading; `grpc` and `protobuf` import, with versions; NumPy
  (optional, a warning); the NIF loads; the runtime directory is private
  and writable; for every configured pool, its adapter imports and its class
  builds in a real one-worker probe (the Python traceback is printed when
  not), and in the thread profile that it declares `__thread_safe__`; what
  `Snakepit.Hardware` sees. See `Snakepit.EnvDoctor`.

  ## Options

    * `--json` - print the results as one JSON object instead:
      `{"ok": bool, "checks": [{"name", "label", "status", "message", "details"}]}`;
      the task's own compilation is kept off stdout, but Mix compiles a
      changed path dependency before any task runs, so run `mix compile`
      first when the JSON is piped
    * `--probe-timeout MS` - how long a probe worker may take to start
      (default 60000)
  """

  use Mix.Task

  alias Snakepit.EnvDoctor

  @switches [json: :boolean, probe_timeout: :integer]

  @impl Mix.Task
  def run(args) do
    {opts, _rest} = OptionParser.parse!(args, strict: @switches)
    json? = Keyword.get(opts, :json, false)

    if json?,
      do: Snakepit.MixOutput.quietly(fn -> Mix.Task.run("app.config") end),
      else: Mix.Task.run("app.config")

    # The probes' own log lines would repeat what the results say.
    Application.put_env(:snakepit, :log_level, :none)
    {status, results} = EnvDoctor.run(probe_timeout: Keyword.get(opts, :probe_timeout, 60_000))

    if json? do
      IO.puts(Snakepit.MixOutput.json(%{ok: status == :ok, checks: results}))
    else
      Enum.each(results, &Snakepit.MixOutput.print_check/1)
    end

    if status == :error do
      failed = Enum.count(results, &(&1.status == :error))
      Mix.raise("snakepit.doctor: #{failed} check(s) failed")
    end
  end
end
