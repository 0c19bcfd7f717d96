defmodule Snakepit.Error.DeviceMismatch do
  @moduledoc """
  Tensors on different devices in one operation, or a device that is not
  there (`got: nil`). Build it with `Snakepit.Error.Device`.
  """

  @type device :: :cpu | :mps | {:cuda, non_neg_integer()} | {:rocm, non_neg_integer()}

  @type t :: %__MODULE__{
          expected: device() | nil,
          got: device() | nil,
          operation: String.t() | nil,
          message: String.t()
        }

  defexception [:expected, :got, :operation, :message]
end

defmodule Snakepit.Error.OutOfMemory do
  @moduledoc """
  A device ran out of memory: what was requested, what was available, and
  recovery `suggestions`. Build it with `Snakepit.Error.Device.out_of_memory/4`.
  """

  @type device :: :cpu | :mps | {:cuda, non_neg_integer()} | {:rocm, non_neg_integer()}

  @type t :: %__MODULE__{
          device: device(),
          requested_bytes: non_neg_integer(),
          available_bytes: non_neg_integer(),
          operation: String.t() | nil,
          suggestions: [String.t()],
          message: String.t()
        }

  defexception [
    :device,
    :requested_bytes,
    :available_bytes,
    :operation,
    :message,
    suggestions: []
  ]
end

defmodule Snakepit.Error.Device do
  @moduledoc """
  Builds device errors. `device_mismatch/3` and `device_unavailable/2` emit
  `[:snakepit, :error, :device]` (metadata `expected_device`,
  `actual_device`, `operation`); `out_of_memory/4` emits
  `[:snakepit, :error, :oom]` (measurements `requested_bytes`,
  `available_bytes`; metadata `device`, `operation`).

      iex> Snakepit.Error.Device.device_mismatch(:cpu, {:cuda, 0}, "matmul").message
      "Device mismatch in matmul: expected CPU, got CUDA:0"
  """

  alias Snakepit.Error.{DeviceMismatch, OutOfMemory}
  alias Snakepit.Telemetry

  @gib 1_073_741_824
  @mib 1_048_576

  @doc "The operation needed `expected` but found a tensor on `got`."
  @spec device_mismatch(term(), term(), String.t()) :: DeviceMismatch.t()
  def device_mismatch(expected, got, operation) do
    emit_device(%DeviceMismatch{
      expected: expected,
      got: got,
      operation: operation,
      message:
        "Device mismatch in #{operation}: expected #{format_device(expected)}, got #{format_device(got)}"
    })
  end

  @doc "`device` is not available for `operation`."
  @spec device_unavailable(term(), String.t()) :: DeviceMismatch.t()
  def device_unavailable(device, operation) do
    emit_device(%DeviceMismatch{
      expected: device,
      got: nil,
      operation: operation,
      message: "Device #{format_device(device)} unavailable or not found for #{operation}"
    })
  end

  @doc "`device` could not allocate `requested_bytes` with `available_bytes` free."
  @spec out_of_memory(term(), non_neg_integer(), non_neg_integer(), String.t() | nil) ::
          OutOfMemory.t()
  def out_of_memory(device, requested_bytes, available_bytes, operation \\ nil) do
    base =
      "OOM on #{format_device(device)}: requested #{format_bytes(requested_bytes)}, " <>
        "available #{format_bytes(available_bytes)}"

    error = %OutOfMemory{
      device: device,
      requested_bytes: requested_bytes,
      available_bytes: available_bytes,
      operation: operation,
      suggestions: suggestions(device, requested_bytes, available_bytes),
      message: if(operation, do: "#{base} during #{operation}", else: base)
    }

    Telemetry.execute(
      [:snakepit, :error, :oom],
      %{requested_bytes: requested_bytes, available_bytes: available_bytes},
      %{device: device, operation: operation}
    )

    error
  end

  defp suggestions(device, requested, available) do
    general = [
      "Reduce batch size",
      "Use gradient checkpointing",
      "Enable mixed precision training (FP16/BF16)",
      "Free unused tensors with del or gc.collect()"
    ]

    per_device =
      case device do
        {:cuda, _} ->
          [
            "Use torch.cuda.empty_cache() to clear cached memory",
            "Set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
          ]

        :mps ->
          ["Use torch.mps.empty_cache() to clear cached memory"]

        _ ->
          []
      end

    # Far more than is free: shrinking the batch will not be enough.
    far_over =
      if requested > 2 * max(available, 1),
        do: [
          "Consider model parallelism or offloading to CPU",
          "Use a smaller model architecture"
        ],
        else: []

    general ++ per_device ++ far_over
  end

  defp emit_device(error) do
    Telemetry.execute([:snakepit, :error, :device], %{}, %{
      expected_device: error.expected,
      actual_device: error.got,
      operation: error.operation
    })

    error
  end

  defp format_device(:cpu), do: "CPU"
  defp format_device(:mps), do: "MPS"
  defp format_device({:cuda, id}), do: "CUDA:#{id}"
  defp format_device({:rocm, id}), do: "ROCm:#{id}"
  defp format_device(nil), do: "unknown"
  defp format_device(other), do: inspect(other)

  defp format_bytes(bytes) when bytes >= @gib, do: "#{Float.round(bytes / @gib, 2)} GB"
  defp format_bytes(bytes) when bytes >= @mib, do: "#{Float.round(bytes / @mib, 2)} MB"
  defp format_bytes(bytes) when bytes >= 1024, do: "#{Float.round(bytes / 1024, 2)} KB"
  defp format_bytes(bytes), do: "#{bytes} bytes"
end
