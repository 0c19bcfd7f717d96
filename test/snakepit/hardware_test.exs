defmodule Snakepit.HardwareTest do
  use ExUnit.Case, async: false

  alias Snakepit.{Hardware, PythonVersion}
  alias Snakepit.Hardware.Selector

  setup do
    Hardware.clear_cache()
    :ok
  end

  describe "detect/0 reads the machine" do
    test "the CPU, as /proc/cpuinfo and /proc/meminfo say" do
      cpuinfo = File.read!("/proc/cpuinfo")
      info = Hardware.detect()

      assert info.cpu.threads == length(Regex.scan(~r/^processor\s*:/m, cpuinfo))
      assert info.cpu.cores >= 1 and info.cpu.cores <= info.cpu.threads

      [_, kb] = Regex.run(~r/^MemTotal:\s+(\d+) kB/m, File.read!("/proc/meminfo"))
      assert info.cpu.memory_total_mb == div(String.to_integer(kb), 1024)

      flags =
        Regex.run(~r/^(?:flags|Features)\s*:(.*)$/m, cpuinfo) |> List.last() |> String.split()

      assert :avx2 in info.cpu.features == "avx2" in flags
      assert :avx in info.cpu.features == "avx" in flags

      [_, model] = Regex.run(~r/^model name\s*:\s*(.+)$/m, cpuinfo)
      assert info.cpu.model == String.trim(model)
      assert info.platform =~ ~r/^linux-/
    end

    test "accelerators only when the machine has them" do
      info = Hardware.detect()

      nvidia? =
        System.find_executable("nvidia-smi") != nil or File.dir?("/proc/driver/nvidia/gpus")

      assert info.cuda != nil == nvidia?
      assert info.mps == nil
      assert info.rocm != nil == (File.exists?("/dev/kfd") and info.rocm != nil)

      expected = if nvidia?, do: :cuda, else: if(info.rocm, do: :rocm, else: :cpu)
      assert info.accelerator == expected
      assert Hardware.capabilities().cuda == nvidia?
    end

    test "is cached until clear_cache/0" do
      info = Hardware.detect()
      assert :persistent_term.get({Snakepit.Hardware.Detector, :hardware_info}) == info
      :ok = Hardware.clear_cache()
      assert :persistent_term.get({Snakepit.Hardware.Detector, :hardware_info}, :gone) == :gone
    end
  end

  describe "selectors" do
    test "the CPU is always there; absent devices are refused" do
      assert Selector.select(:cpu) == {:ok, :cpu}
      assert Selector.select(:mps) == {:error, :device_not_available}
      assert Selector.select({:cuda, 99}) == {:error, :device_not_available}
      assert Selector.select(:tpu) == {:error, :device_not_available}
      assert Hardware.select_with_fallback([]) == {:error, :no_device}

      if Hardware.detect().accelerator == :cpu do
        assert Hardware.select(:auto) == {:ok, :cpu}
        assert Hardware.select(:cuda) == {:error, :device_not_available}
        assert Hardware.select_with_fallback([:cuda, :mps, :rocm, :cpu]) == {:ok, :cpu}
        assert Hardware.select_with_fallback([:cuda, :mps, :rocm]) == {:error, :no_device}

        assert Hardware.device_info({:cuda, 0}) == %{
                 type: :cuda,
                 device_id: 0,
                 error: :cuda_not_available
               }
      end
    end

    test "device_info and identity" do
      cpu = Hardware.detect().cpu

      assert %{type: :cpu, cores: cores, threads: threads, name: name} =
               Hardware.device_info(:cpu)

      assert {cores, threads, name} == {cpu.cores, cpu.threads, cpu.model}

      identity = Hardware.identity()
      assert identity["platform"] == Hardware.detect().platform
      assert identity["accelerator"] == Atom.to_string(Hardware.detect().accelerator)
      assert identity["cpu_features"] == Enum.map(cpu.features, &Atom.to_string/1)
      assert is_integer(identity["gpu_count"])
    end
  end

  describe "PythonVersion" do
    test "the version and free-threading of the interpreter the pools use" do
      {:ok, %{path: python}} = Snakepit.PythonRuntime.resolve()
      {text, 0} = System.cmd(python, ["-c", "import sys; print(*sys.version_info[:3])"])
      expected = text |> String.split() |> Enum.map(&String.to_integer/1) |> List.to_tuple()
      assert PythonVersion.detect() == {:ok, expected}

      {flag, 0} =
        System.cmd(python, [
          "-c",
          "import sysconfig; print(bool(sysconfig.get_config_var('Py_GIL_DISABLED')))"
        ])

      assert {:ok, %{build: build, gil_disabled: gil_disabled}} = PythonVersion.free_threading()
      assert build == (String.trim(flag) == "True")
      if not build, do: assert(gil_disabled == false)
      assert PythonVersion.recommend_profile() == if(gil_disabled, do: :thread, else: :process)
      assert PythonVersion.validate() == :ok
    end

    test "upstream's version rules" do
      assert PythonVersion.supports_free_threading?({3, 13, 0})
      refute PythonVersion.supports_free_threading?({3, 12, 9})
      assert PythonVersion.recommend_profile({3, 13, 1}) == :thread
      assert PythonVersion.recommend_profile({3, 11, 2}) == :process
      assert {:error, {:python_not_found, _}} = PythonVersion.detect("/nonexistent/python3")
    end
  end
end
