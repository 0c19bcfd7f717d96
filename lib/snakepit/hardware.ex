defmodule Snakepit.Hardware do
  @moduledoc """
  What hardware this machine offers ML workloads, and a device to use.

      info = Snakepit.Hardware.detect()
      info.accelerator            #=> :cpu | :cuda | :mps | :rocm
      info.cpu.cores              #=> physical cores
      Snakepit.Hardware.capabilities().avx2
      {:ok, device} = Snakepit.Hardware.select_with_fallback([:cuda, :mps, :cpu])

  Detection reads the machine itself (see `Snakepit.Hardware.Detector`) and
  is cached; `clear_cache/0` forgets it. `mix snakepit.doctor` prints it.
  """

  alias Snakepit.Hardware.{Detector, Selector}

  @type device :: Selector.device()
  @type device_preference :: Selector.device_preference()
  @type hardware_info :: Detector.hardware_info()
  @type capabilities :: Detector.capabilities()

  @doc """
  Everything detected: `:accelerator` (`:cpu | :cuda | :mps | :rocm`),
  `:cpu` (`cores`, `threads`, `model`, `features`, `memory_total_mb`,
  `memory_available_mb`), `:cuda`, `:mps`, `:rocm` (`nil` when absent) and
  `:platform` (`"linux-x86_64"`).
  """
  @spec detect() :: hardware_info()
  defdelegate detect(), to: Detector

  @doc "Same as `detect/0`."
  @spec info() :: hardware_info()
  def info, do: detect()

  @doc """
  Flags: `cuda`, `mps`, `rocm`, `avx`, `avx2`, `avx512`, `cudnn`, plus
  `cuda_version` and `cudnn_version` (`nil` when absent).
  """
  @spec capabilities() :: capabilities()
  defdelegate capabilities(), to: Detector

  @doc "Forgets the cached detection."
  @spec clear_cache() :: :ok
  defdelegate clear_cache(), to: Detector

  @doc "Selects a device; see `Snakepit.Hardware.Selector.select/1`."
  @spec select(device_preference()) :: {:ok, device()} | {:error, :device_not_available}
  defdelegate select(preference), to: Selector

  @doc "The first available device of a preference list."
  @spec select_with_fallback([device_preference()]) :: {:ok, device()} | {:error, :no_device}
  defdelegate select_with_fallback(preferences), to: Selector

  @doc "A description of a device for logs and telemetry."
  @spec device_info(device() | :cuda | :rocm) :: map()
  defdelegate device_info(device), to: Selector

  @doc """
  A string-keyed summary for lock files: `"platform"`, `"accelerator"`,
  `"cpu_features"` and `"gpu_count"`.
  """
  @spec identity() :: %{String.t() => term()}
  def identity do
    info = detect()

    gpu_count =
      cond do
        info.cuda != nil -> length(info.cuda.devices)
        info.rocm != nil -> length(info.rocm.devices)
        match?(%{available: true}, info.mps) -> 1
        true -> 0
      end

    %{
      "platform" => info.platform,
      "accelerator" => Atom.to_string(info.accelerator),
      "cpu_features" => Enum.map(info.cpu.features, &Atom.to_string/1),
      "gpu_count" => gpu_count
    }
  end
end
