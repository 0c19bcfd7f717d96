defmodule Snakepit.Hardware.Detector do
  @moduledoc """
  Reads what the machine has: CPU (physical cores, logical threads, model,
  instruction-set features, memory), NVIDIA CUDA GPUs, Apple MPS and AMD
  ROCm GPUs.

  Sources, on Linux: `/proc/cpuinfo`, `/proc/meminfo` and
  `/sys/devices/system/cpu` for the CPU; `nvidia-smi` when it is on `PATH`,
  else `/proc/driver/nvidia` for CUDA devices; the KFD topology in
  `/sys/class/kfd` for ROCm devices. On macOS, `sysctl`. Nothing is
  guessed: a count that cannot be read falls back to what the BEAM sees
  (`:erlang.system_info(:logical_processors)`), and an accelerator that is
  not there is `nil`.

  The result is cached (`:persistent_term`) until `clear_cache/0`.
  """

  @cache_key {__MODULE__, :hardware_info}

  @typedoc "The primary accelerator."
  @type accelerator :: :cpu | :cuda | :mps | :rocm

  @type cpu_info :: %{
          cores: pos_integer(),
          threads: pos_integer(),
          model: String.t(),
          features: [atom()],
          memory_total_mb: non_neg_integer(),
          memory_available_mb: non_neg_integer() | nil
        }

  @type cuda_device :: %{
          id: non_neg_integer(),
          name: String.t(),
          memory_total_mb: non_neg_integer() | nil,
          memory_free_mb: non_neg_integer() | nil,
          compute_capability: String.t() | nil
        }

  @type cuda_info :: %{
          version: String.t() | nil,
          driver_version: String.t() | nil,
          devices: [cuda_device()],
          cudnn_version: String.t() | nil
        }

  @type mps_info :: %{
          available: boolean(),
          device_name: String.t(),
          memory_total_mb: non_neg_integer()
        }

  @type rocm_device :: %{
          id: non_neg_integer(),
          name: String.t(),
          memory_total_mb: non_neg_integer() | nil,
          memory_free_mb: non_neg_integer() | nil
        }

  @type rocm_info :: %{version: String.t() | nil, devices: [rocm_device()]}

  @type hardware_info :: %{
          accelerator: accelerator(),
          cpu: cpu_info(),
          cuda: cuda_info() | nil,
          mps: mps_info() | nil,
          rocm: rocm_info() | nil,
          platform: String.t()
        }

  @type capabilities :: %{
          cuda: boolean(),
          mps: boolean(),
          rocm: boolean(),
          avx: boolean(),
          avx2: boolean(),
          avx512: boolean(),
          cuda_version: String.t() | nil,
          cudnn_version: String.t() | nil,
          cudnn: boolean()
        }

  # /proc/cpuinfo flag (x86 "flags", ARM "Features") -> feature atom.
  @known_features %{
    "sse3" => :sse3,
    "pni" => :sse3,
    "ssse3" => :ssse3,
    "sse4_1" => :sse4_1,
    "sse4_2" => :sse4_2,
    "avx" => :avx,
    "avx2" => :avx2,
    "avx512f" => :avx512,
    "fma" => :fma,
    "f16c" => :f16c,
    "aes" => :aes,
    "pclmulqdq" => :pclmul,
    "neon" => :neon,
    "asimd" => :asimd
  }

  @doc "Everything detected (see `Snakepit.Hardware.detect/0`); cached."
  @spec detect() :: hardware_info()
  def detect do
    case :persistent_term.get(@cache_key, nil) do
      nil ->
        info = detect_now()
        :persistent_term.put(@cache_key, info)
        info

      info ->
        info
    end
  end

  @doc "Boolean flags derived from `detect/0`."
  @spec capabilities() :: capabilities()
  def capabilities do
    info = detect()
    features = info.cpu.features
    cudnn_version = info.cuda && info.cuda.cudnn_version

    %{
      cuda: gpus?(info.cuda),
      mps: match?(%{available: true}, info.mps),
      rocm: gpus?(info.rocm),
      avx: :avx in features,
      avx2: :avx2 in features,
      avx512: :avx512 in features,
      cuda_version: info.cuda && info.cuda.version,
      cudnn_version: cudnn_version,
      cudnn: cudnn_version != nil
    }
  end

  @doc "Forgets the cached result, so the next `detect/0` reads the machine again."
  @spec clear_cache() :: :ok
  def clear_cache do
    :persistent_term.erase(@cache_key)
    :ok
  end

  defp detect_now do
    os = :os.type()
    cuda = cuda(os)
    mps = mps(os)
    rocm = rocm(os)

    accelerator =
      cond do
        gpus?(cuda) -> :cuda
        match?(%{available: true}, mps) -> :mps
        gpus?(rocm) -> :rocm
        true -> :cpu
      end

    %{
      accelerator: accelerator,
      cpu: cpu(os),
      cuda: cuda,
      mps: mps,
      rocm: rocm,
      platform: platform(os)
    }
  end

  defp gpus?(%{devices: [_ | _]}), do: true
  defp gpus?(_), do: false

  defp platform(os) do
    os_name =
      case os do
        {:unix, :linux} -> "linux"
        {:unix, :darwin} -> "macos"
        {:win32, _} -> "windows"
        {_, name} -> Atom.to_string(name)
      end

    arch =
      :erlang.system_info(:system_architecture) |> List.to_string() |> String.split("-") |> hd()

    arch =
      case arch do
        "amd64" -> "x86_64"
        "aarch64" -> "arm64"
        other -> other
      end

    "#{os_name}-#{arch}"
  end

  # ------------------------------------------------------------------ CPU

  defp cpu({:unix, :linux}) do
    entries = cpuinfo_entries()
    first = List.first(entries, %{})
    threads = length(entries) |> positive_or(beam_threads())

    %{
      cores: linux_cores(entries) |> positive_or(threads),
      threads: threads,
      model: first["model name"] || first["Model"] || first["Hardware"] || "unknown",
      features: features(first["flags"] || first["Features"] || ""),
      memory_total_mb: meminfo_mb("MemTotal") || 0,
      memory_available_mb: meminfo_mb("MemAvailable")
    }
  end

  defp cpu({:unix, :darwin}) do
    threads = sysctl_int("hw.logicalcpu") |> positive_or(beam_threads())

    %{
      cores: sysctl_int("hw.physicalcpu") |> positive_or(threads),
      threads: threads,
      model: sysctl("machdep.cpu.brand_string") || "unknown",
      features: darwin_features(),
      memory_total_mb: div(sysctl_int("hw.memsize") || 0, 1024 * 1024),
      memory_available_mb: nil
    }
  end

  defp cpu(_os) do
    threads = beam_threads()

    %{
      cores: threads,
      threads: threads,
      model: "unknown",
      features: [],
      memory_total_mb: 0,
      memory_available_mb: nil
    }
  end

  defp darwin_features do
    for {key, feature} <- [
          {"hw.optional.avx1_0", :avx},
          {"hw.optional.avx2_0", :avx2},
          {"hw.optional.avx512f", :avx512},
          {"hw.optional.sse4_1", :sse4_1},
          {"hw.optional.sse4_2", :sse4_2},
          {"hw.optional.neon", :neon}
        ],
        sysctl(key) == "1",
        do: feature
  end

  defp beam_threads do
    case :erlang.system_info(:logical_processors) do
      count when is_integer(count) -> count
      :unknown -> System.schedulers()
    end
  end

  defp positive_or(count, _fallback) when is_integer(count) and count > 0, do: count
  defp positive_or(_count, fallback), do: fallback

  # One map per "processor" block of /proc/cpuinfo.
  defp cpuinfo_entries do
    case File.read("/proc/cpuinfo") do
      {:ok, text} ->
        text
        |> String.split(~r/\n\s*\n/, trim: true)
        |> Enum.map(&key_values/1)
        |> Enum.filter(&Map.has_key?(&1, "processor"))

      {:error, _} ->
        []
    end
  end

  defp key_values(block) do
    for line <- String.split(block, "\n"),
        [key, value] <- [String.split(line, ":", parts: 2)],
        into: %{},
        do: {String.trim(key), String.trim(value)}
  end

  # Physical cores: distinct (package, core) pairs, from /proc/cpuinfo or
  # else sysfs topology (ARM kernels often leave them out of cpuinfo).
  defp linux_cores(entries) do
    pairs = for e <- entries, e["core id"] != nil, do: {e["physical id"], e["core id"]}

    if pairs != [] do
      pairs |> Enum.uniq() |> length()
    else
      "/sys/devices/system/cpu/cpu[0-9]*/topology"
      |> Path.wildcard()
      |> Enum.map(fn dir ->
        {read_trimmed(Path.join(dir, "physical_package_id")),
         read_trimmed(Path.join(dir, "core_id"))}
      end)
      |> Enum.reject(&match?({_, nil}, &1))
      |> Enum.uniq()
      |> length()
    end
  end

  defp features(flags) do
    flags
    |> String.split()
    |> Enum.map(&Map.get(@known_features, String.downcase(&1)))
    |> Enum.reject(&is_nil/1)
    |> Enum.uniq()
  end

  defp meminfo_mb(field) do
    with {:ok, text} <- File.read("/proc/meminfo"),
         [_, kb] <- Regex.run(~r/^#{field}:\s+(\d+) kB/m, text) do
      div(String.to_integer(kb), 1024)
    else
      _ -> nil
    end
  end

  # ----------------------------------------------------------------- CUDA

  defp cuda({:unix, :linux}), do: nvidia_smi() || proc_nvidia()
  defp cuda({:win32, _}), do: nvidia_smi()
  defp cuda(_os), do: nil

  defp nvidia_smi do
    with exe when is_binary(exe) <- System.find_executable("nvidia-smi"),
         {:ok, csv} <-
           run(exe, [
             "--query-gpu=index,name,memory.total,memory.free,compute_cap,driver_version",
             "--format=csv,noheader,nounits"
           ]) do
      rows = csv |> String.split("\n", trim: true) |> Enum.map(&String.split(&1, ~r/\s*,\s*/))

      devices =
        for [id, name, total, free | rest] <- rows do
          %{
            id: int(id) || 0,
            name: name,
            memory_total_mb: int(total),
            memory_free_mb: int(free),
            compute_capability: rest |> List.first() |> not_applicable()
          }
        end

      driver = rows |> List.first([]) |> Enum.at(5) |> not_applicable()

      # The CUDA version the driver supports is only in the banner.
      version =
        case run(exe, []) do
          {:ok, banner} -> capture(~r/CUDA Version:\s*([\d.]+)/, banner)
          :error -> nil
        end

      %{
        version: version,
        driver_version: driver,
        devices: devices,
        cudnn_version: cudnn_version()
      }
    else
      _ -> nil
    end
  end

  defp proc_nvidia do
    case Path.wildcard("/proc/driver/nvidia/gpus/*/information") do
      [] ->
        nil

      files ->
        devices =
          files
          |> Enum.sort()
          |> Enum.with_index()
          |> Enum.map(fn {file, index} ->
            name = capture(~r/^Model:\s*(.+)$/m, File.read!(file)) || "NVIDIA GPU"

            %{
              id: index,
              name: name,
              memory_total_mb: nil,
              memory_free_mb: nil,
              compute_capability: nil
            }
          end)

        driver =
          case File.read("/proc/driver/nvidia/version") do
            {:ok, text} -> capture(~r/Kernel Module\s+([\d.]+)/, text)
            {:error, _} -> nil
          end

        %{version: nil, driver_version: driver, devices: devices, cudnn_version: cudnn_version()}
    end
  end

  # cuDNN's major version, from the shared libraries the loader knows.
  defp cudnn_version do
    with exe when is_binary(exe) <-
           System.find_executable("ldconfig") || existing("/sbin/ldconfig"),
         {:ok, listing} <- run(exe, ["-p"]) do
      capture(~r/libcudnn\.so\.(\d+)/, listing)
    else
      _ -> nil
    end
  end

  # ------------------------------------------------------------------ MPS

  defp mps({:unix, :darwin}) do
    if sysctl("hw.optional.arm64") == "1" do
      %{
        available: true,
        device_name: "#{sysctl("machdep.cpu.brand_string") || "Apple Silicon"} GPU",
        memory_total_mb: div(sysctl_int("hw.memsize") || 0, 1024 * 1024)
      }
    end
  end

  defp mps(_os), do: nil

  # ----------------------------------------------------------------- ROCm

  # GPU nodes of the KFD topology (the AMD compute driver ROCm runs on);
  # CPU nodes have no SIMD units.
  defp rocm({:unix, :linux}) do
    if File.exists?("/dev/kfd") do
      devices =
        "/sys/class/kfd/kfd/topology/nodes/*"
        |> Path.wildcard()
        |> Enum.sort_by(&(&1 |> Path.basename() |> int()))
        |> Enum.filter(&((kfd_property(&1, "simd_count") || 0) > 0))
        |> Enum.with_index()
        |> Enum.map(fn {node, index} ->
          %{
            id: index,
            name: read_trimmed(Path.join(node, "name")) || "AMD GPU",
            memory_total_mb: kfd_memory_mb(node),
            memory_free_mb: nil
          }
        end)

      if devices != [] do
        %{version: read_trimmed("/opt/rocm/.info/version"), devices: devices}
      end
    end
  end

  defp rocm(_os), do: nil

  defp kfd_property(node, key) do
    with {:ok, text} <- File.read(Path.join(node, "properties")),
         value when is_binary(value) <- capture(~r/^#{key}\s+(\d+)$/m, text) do
      String.to_integer(value)
    else
      _ -> nil
    end
  end

  defp kfd_memory_mb(node) do
    bytes =
      node
      |> Path.join("mem_banks/*")
      |> Path.wildcard()
      |> Enum.map(&(kfd_property(&1, "size_in_bytes") || 0))
      |> Enum.sum()

    if bytes > 0, do: div(bytes, 1024 * 1024)
  end

  # -------------------------------------------------------------- helpers

  defp sysctl(key) do
    case System.find_executable("sysctl") do
      nil ->
        nil

      exe ->
        case run(exe, ["-n", key]) do
          {:ok, value} -> String.trim(value)
          :error -> nil
        end
    end
  end

  defp sysctl_int(key), do: key |> sysctl() |> int()

  defp run(exe, args) do
    case System.cmd(exe, args, stderr_to_stdout: true) do
      {output, 0} -> {:ok, output}
      {_output, _status} -> :error
    end
  rescue
    ErlangError -> :error
  end

  defp read_trimmed(path) do
    case File.read(path) do
      {:ok, text} -> String.trim(text)
      {:error, _} -> nil
    end
  end

  defp existing(path), do: if(File.exists?(path), do: path)

  defp capture(regex, text) do
    case Regex.run(regex, text) do
      [_, value] -> String.trim(value)
      _ -> nil
    end
  end

  defp not_applicable(nil), do: nil
  defp not_applicable(value) when value in ["", "[N/A]", "N/A"], do: nil
  defp not_applicable(value), do: value

  defp int(nil), do: nil

  defp int(text) do
    case Integer.parse(String.trim(text)) do
      {value, _} -> value
      :error -> nil
    end
  end
end
