defmodule Snakepit.Hardware.Selector do
  @moduledoc """
  Picks a device from what `Snakepit.Hardware.Detector` found.

  `:auto` prefers CUDA, then MPS, then ROCm, then the CPU. A request for a
  device the machine does not have is `{:error, :device_not_available}`.
  """

  alias Snakepit.Hardware.Detector

  @type device :: :cpu | :mps | {:cuda, non_neg_integer()} | {:rocm, non_neg_integer()}

  @type device_preference ::
          :auto
          | :cpu
          | :cuda
          | :mps
          | :rocm
          | {:cuda, non_neg_integer()}
          | {:rocm, non_neg_integer()}

  @doc """
  Selects a device: `:auto`, `:cpu` (always there), `:cuda` / `:rocm` (the
  first GPU of that kind), `{:cuda, id}` / `{:rocm, id}`, or `:mps`.
  """
  @spec select(device_preference()) :: {:ok, device()} | {:error, :device_not_available}
  def select(:auto) do
    info = Detector.detect()

    cond do
      has_gpus?(info.cuda) -> {:ok, {:cuda, 0}}
      mps?(info.mps) -> {:ok, :mps}
      has_gpus?(info.rocm) -> {:ok, {:rocm, 0}}
      true -> {:ok, :cpu}
    end
  end

  def select(:cpu), do: {:ok, :cpu}
  def select(:mps), do: if(mps?(Detector.detect().mps), do: {:ok, :mps}, else: unavailable())
  def select(kind) when kind in [:cuda, :rocm], do: select({kind, first_id(kind)})

  def select({kind, id}) when kind in [:cuda, :rocm] and is_integer(id) do
    if gpu(kind, id), do: {:ok, {kind, id}}, else: unavailable()
  end

  def select(_other), do: unavailable()

  @doc "The first device of `preferences` that `select/1` can give, else `{:error, :no_device}`."
  @spec select_with_fallback([device_preference()]) :: {:ok, device()} | {:error, :no_device}
  def select_with_fallback(preferences) when is_list(preferences) do
    Enum.find_value(preferences, {:error, :no_device}, fn preference ->
      case select(preference) do
        {:ok, device} -> {:ok, device}
        {:error, _} -> nil
      end
    end)
  end

  @doc """
  A map describing `device` for logs and telemetry: its `type`, name and
  memory; `error: :device_not_found` (or `:cuda_not_available`, ...) when the
  machine does not have it.
  """
  @spec device_info(device() | :cuda | :rocm) :: map()
  def device_info(:cpu) do
    cpu = Detector.detect().cpu

    %{
      type: :cpu,
      name: cpu.model,
      cores: cpu.cores,
      threads: cpu.threads,
      memory_mb: cpu.memory_total_mb
    }
  end

  def device_info(:mps) do
    case Detector.detect().mps do
      %{available: true} = mps ->
        %{type: :mps, name: mps.device_name, memory_mb: mps.memory_total_mb}

      _ ->
        %{type: :mps, error: :mps_not_available}
    end
  end

  def device_info(kind) when kind in [:cuda, :rocm], do: device_info({kind, 0})

  def device_info({kind, id}) when kind in [:cuda, :rocm] do
    info = Map.fetch!(Detector.detect(), kind)

    case {info, gpu(kind, id)} do
      {nil, _} ->
        %{type: kind, device_id: id, error: :"#{kind}_not_available"}

      {_, nil} ->
        %{type: kind, device_id: id, error: :device_not_found}

      {info, device} ->
        %{
          type: kind,
          device_id: id,
          name: device.name,
          memory_total_mb: device.memory_total_mb,
          memory_free_mb: device.memory_free_mb
        }
        |> Map.merge(version_info(kind, info, device))
    end
  end

  defp version_info(:cuda, info, device),
    do: %{cuda_version: info.version, compute_capability: device.compute_capability}

  defp version_info(:rocm, info, _device), do: %{rocm_version: info.version}

  defp gpu(kind, id) do
    case Map.fetch!(Detector.detect(), kind) do
      %{devices: devices} -> Enum.find(devices, &(&1.id == id))
      nil -> nil
    end
  end

  defp first_id(kind) do
    case Map.fetch!(Detector.detect(), kind) do
      %{devices: [first | _]} -> first.id
      _ -> 0
    end
  end

  defp has_gpus?(%{devices: [_ | _]}), do: true
  defp has_gpus?(_), do: false

  defp mps?(mps), do: match?(%{available: true}, mps)

  defp unavailable, do: {:error, :device_not_available}
end
