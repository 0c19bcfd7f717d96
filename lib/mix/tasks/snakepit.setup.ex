defmodule Mix.Tasks.Snakepit.Setup do
  @shortdoc "Makes the Python side ready: the app's .venv, its requirements, then the doctor"

  @moduledoc """
  Makes the Python side of the app ready, one line per step, then runs
  `mix snakepit.doctor`. Exits non-zero when a step or a check fails.

      mix snakepit.setup

  Steps:

    1. **The interpreter.** When no rule above the app's `.venv` chooses one
       (`:python_executable`, `SNAKEPIT_PYTHON`, `:python_runtime`,
       `$VIRTUAL_ENV`; see `Snakepit.PythonRuntime`) and neither `.venv` nor
       `../.venv` exists, creates `.venv` with
       `python3 -m venv --system-site-packages .venv` from the system
       interpreter that imports `grpc`. That works offline: the venv sees
       the system's packages (Debian's `python3-grpcio`,
       `python3-protobuf`, `python3-numpy`, ...).
    2. **Requirements.** Checks `grpcio`, `protobuf` and every line of the
       app's `requirements.txt` against that interpreter. What is missing is
       installed with pip when the interpreter is a virtual environment and
       the package index (`PIP_INDEX_URL`, default `https://pypi.org/simple`)
       is reachable; otherwise each missing requirement is named with how
       to get it.
    3. **The doctor** (`Snakepit.EnvDoctor`).

  Running it again changes nothing once the app is ready.

  ## Options

    * `--probe-timeout MS` - passed to the doctor (default 60000)
  """

  use Mix.Task

  alias Snakepit.{EnvDoctor, MixOutput, PythonRuntime}

  @switches [probe_timeout: :integer]
  @base_requirements ["grpcio", "protobuf"]
  @default_index "https://pypi.org/simple"

  @impl Mix.Task
  def run(args) do
    {opts, _rest} = OptionParser.parse!(args, strict: @switches)
    Mix.Task.run("app.config")
    root = File.cwd!()

    steps_ok =
      case interpreter(root) do
        {:ok, python} -> requirements(python, root)
        :error -> false
      end

    Application.put_env(:snakepit, :log_level, :none)
    {doctor, results} = EnvDoctor.run(probe_timeout: Keyword.get(opts, :probe_timeout, 60_000))
    Enum.each(results, &MixOutput.print_check/1)

    unless steps_ok and doctor == :ok,
      do: Mix.raise("snakepit.setup: the Python side is not ready (see above)")
  end

  # ------------------------------------------------------------ interpreter

  defp interpreter(root) do
    case PythonRuntime.choose(root: root) do
      {:ok, %{rule: rule} = choice} when rule in [:app_venv, :parent_venv] ->
        MixOutput.line(:ok, "venv", "#{choice.path} exists (#{choice.reason})")
        {:ok, choice.path}

      {:ok, %{rule: :system} = choice} ->
        create_venv(root, choice.path)

      # Only the system search fails for want of an interpreter; a venv
      # made from any python3 then gets grpcio and protobuf in step 2.
      {:error, _} = error ->
        if named_interpreter?(), do: failed(error), else: create_venv(root, any_python3())

      {:ok, choice} ->
        MixOutput.line(
          :ok,
          "interpreter",
          "#{choice.path}, chosen by #{choice.reason}; no .venv needed"
        )

        {:ok, choice.path}
    end
  end

  defp named_interpreter? do
    Application.get_env(:snakepit, :python_executable) not in [nil, ""] or
      System.get_env("SNAKEPIT_PYTHON") not in [nil, ""] or
      Application.get_env(:snakepit, :python_runtime) != nil or
      Application.get_env(:snakepit, :python) != nil
  end

  defp failed({:error, message}) do
    MixOutput.line(:error, "interpreter", message)
    :error
  end

  defp any_python3 do
    Enum.find_value(["python3", "/usr/bin/python3"], fn name ->
      if String.starts_with?(name, "/"),
        do: File.exists?(name) && name,
        else: System.find_executable(name)
    end)
  end

  defp create_venv(_root, nil) do
    MixOutput.line(
      :error,
      "venv",
      "no python3 found to create .venv with (Debian: apt-get install python3 python3-venv)"
    )

    :error
  end

  defp create_venv(root, base) do
    venv = Path.join(root, ".venv")

    case System.cmd(base, ["-m", "venv", "--system-site-packages", venv], stderr_to_stdout: true) do
      {_, 0} ->
        MixOutput.line(:ok, "venv", "created #{venv} (#{base} -m venv --system-site-packages)")
        {:ok, Path.join([venv, "bin", "python3"])}

      {output, status} ->
        File.rm_rf(venv)

        MixOutput.line(
          :error,
          "venv",
          "#{base} -m venv failed (exit #{status}): #{last_line(output)} " <>
            "(Debian: apt-get install python3-venv)"
        )

        :error
    end
  end

  # ----------------------------------------------------------- requirements

  defp requirements(python, root) do
    file = Path.join(root, "requirements.txt")
    file_args = if File.regular?(file), do: ["--file", file], else: []

    with {:ok, rows} <- check(python, file_args) do
      case Enum.filter(rows, &(&1.status in ["missing", "mismatch"])) do
        [] ->
          report_satisfied(rows, file_args != [])

        missing ->
          install(python, missing, file_args)
      end
    end
  end

  defp check(python, file_args) do
    script = Path.join(Snakepit.Python.bridge_dir(), "snakepit_requirements.py")

    case System.cmd(python, [script | file_args] ++ @base_requirements, stderr_to_stdout: true) do
      {output, 0} ->
        {:ok, output |> String.split("\n", trim: true) |> Enum.map(&row/1)}

      {output, status} ->
        MixOutput.line(
          :error,
          "requirements",
          "could not check them with #{python} (exit #{status}): #{last_line(output)}"
        )

        false
    end
  end

  defp row(line) do
    [status, name, requirement | installed] = String.split(line, "\t")
    %{status: status, name: name, requirement: requirement, installed: List.first(installed)}
  end

  defp report_satisfied(rows, from_file?) do
    checked = Enum.count(rows, &(&1.status == "ok"))

    source =
      if from_file?,
        do: "grpcio, protobuf and requirements.txt",
        else: "grpcio and protobuf (no requirements.txt)"

    MixOutput.line(:ok, "requirements", "#{checked} satisfied: #{source}")

    for %{status: "unchecked", requirement: line} <- rows do
      MixOutput.line(:warning, "requirements", "not checked (left to pip): #{line}")
    end

    true
  end

  defp install(python, missing, file_args) do
    index = System.get_env("PIP_INDEX_URL") || @default_index

    cond do
      not venv?(python) ->
        Enum.each(
          missing,
          &report_missing(
            &1,
            python,
            "it is not a virtual environment, so setup does not install into it"
          )
        )

        false

      not reachable?(index) ->
        Enum.each(
          missing,
          &report_missing(&1, python, "no package index is reachable at #{index}")
        )

        false

      true ->
        pip_args = ["-m", "pip", "install"] ++ pip_targets(missing, file_args)
        MixOutput.line(:ok, "requirements", "installing: #{python} #{Enum.join(pip_args, " ")}")

        case System.cmd(python, pip_args, stderr_to_stdout: true, into: IO.stream(:stdio, :line)) do
          {_, 0} ->
            with {:ok, rows} <- check(python, file_args) do
              case Enum.filter(rows, &(&1.status in ["missing", "mismatch"])) do
                [] ->
                  report_satisfied(rows, file_args != [])

                still ->
                  Enum.each(still, &report_missing(&1, python, "pip did not install it"))
                  false
              end
            end

          {_, status} ->
            MixOutput.line(
              :error,
              "requirements",
              "pip install failed (exit #{status}, see above)"
            )

            false
        end
    end
  end

  defp pip_targets(missing, file_args) do
    base = for %{name: name} <- missing, name in @base_requirements, do: name
    requirements_file = if file_args == [], do: [], else: ["-r", List.last(file_args)]
    base ++ requirements_file
  end

  defp report_missing(row, python, why) do
    state =
      case row.status do
        "missing" -> "is not installed"
        "mismatch" -> "is not met (#{row.installed} installed)"
      end

    MixOutput.line(
      :error,
      "requirement",
      "#{row.requirement} #{state} for #{python}: #{why}. Get it with " <>
        "`#{python} -m pip install '#{row.requirement}'` where an index is reachable" <>
        debian_hint(row.name)
    )
  end

  # A virtual environment made with --system-site-packages sees Debian's
  # packages, so the apt package is a way to get a requirement offline.
  defp debian_hint(name) do
    package = "python3-" <> (name |> String.downcase() |> String.replace("_", "-"))

    with apt when is_binary(apt) <- System.find_executable("apt-cache"),
         {output, 0} <- System.cmd(apt, ["policy", package], stderr_to_stdout: true),
         [_, candidate] <- Regex.run(~r/Candidate:\s*(\S+)/, output),
         true <- candidate != "(none)" do
      ", or system-wide with `apt-get install #{package}` (#{candidate}), which a --system-site-packages venv sees"
    else
      _ -> ""
    end
  end

  defp venv?(python) do
    python |> Path.dirname() |> Path.dirname() |> Path.join("pyvenv.cfg") |> File.regular?()
  end

  defp reachable?(index) do
    uri = URI.parse(index)

    with host when is_binary(host) <- uri.host,
         {:ok, socket} <- :gen_tcp.connect(String.to_charlist(host), uri.port || 443, [], 3_000) do
      :gen_tcp.close(socket)
      true
    else
      _ -> false
    end
  end

  defp last_line(output), do: output |> String.split("\n", trim: true) |> List.last("")
end
