defmodule Snakepit.MLErrorsTest do
  use ExUnit.Case, async: true

  alias Snakepit.Error.{Device, DeviceMismatch, OutOfMemory, Parser, Shape, ShapeMismatch}

  doctest Snakepit.Error.Shape
  doctest Snakepit.Error.Device
  doctest Snakepit.Error.Parser
  doctest Snakepit.Error.PythonException
  doctest Snakepit.Serialization

  test "shape and dimension mismatches" do
    error = Shape.shape_mismatch([3, 224, 224], [3, 256, 256], "conv2d")
    assert %ShapeMismatch{dimension: 1, expected_dim: 224, got_dim: 256} = error

    assert Exception.message(error) ==
             "Shape mismatch in conv2d: expected [3, 224, 224], got [3, 256, 256]"

    rank = Shape.shape_mismatch([3, 224], [3, 224, 1], "reshape")
    assert rank.dimension == nil
    assert rank.message =~ "rank mismatch - expected 2 dimensions"

    dim = Shape.dimension_mismatch(2, 224, 256, "conv2d")
    assert %ShapeMismatch{expected: nil, dimension: 2, expected_dim: 224, got_dim: 256} = dim
    assert Exception.message(dim) == "Shape mismatch in conv2d: dimension 2 expected 224, got 256"

    assert Shape.broadcast_error([2, 3], [4], "add").message ==
             "Cannot broadcast shapes [2, 3] and [4] in add"
  end

  test "device errors and out of memory with suggestions" do
    assert %DeviceMismatch{expected: :cpu, got: {:cuda, 0}, operation: "matmul"} =
             Device.device_mismatch(:cpu, {:cuda, 0}, "matmul")

    unavailable = Device.device_unavailable({:cuda, 2}, "forward_pass")
    assert unavailable.got == nil
    assert unavailable.message == "Device CUDA:2 unavailable or not found for forward_pass"

    oom = Device.out_of_memory({:cuda, 0}, 2 * 1024 ** 3, 512 * 1024 ** 2)
    assert %OutOfMemory{device: {:cuda, 0}, operation: nil} = oom
    assert oom.message == "OOM on CUDA:0: requested 2.0 GB, available 512.0 MB"
    assert "Reduce batch size" in oom.suggestions
    assert "Use torch.cuda.empty_cache() to clear cached memory" in oom.suggestions
    # Four times what is free: shrinking the batch is not enough.
    assert "Use a smaller model architecture" in oom.suggestions

    small = Device.out_of_memory(:cpu, 100, 80, "fit")
    assert small.message =~ "during fit"
    refute "Use a smaller model architecture" in small.suggestions
  end

  test "the parser recognises shape, memory and device messages, else the Python type" do
    assert {:ok, %ShapeMismatch{expected: [3, 224, 224], got: [3, 256, 256]}} =
             Parser.parse(%{
               "type" => "RuntimeError",
               "message" => "shape mismatch: expected [3, 224, 224], got [3, 256, 256]"
             })

    assert {:ok, %OutOfMemory{device: {:cuda, 0}, requested_bytes: 2_147_483_648}} =
             Parser.parse(%{
               "type" => "RuntimeError",
               "message" => "CUDA out of memory. Tried to allocate 2.00 GiB"
             })

    assert {:ok, %DeviceMismatch{expected: {:cuda, 0}, got: :cpu}} =
             Parser.parse(%{
               "type" => "RuntimeError",
               "message" =>
                 "Expected all tensors to be on the same device, but found cuda:0 and cpu!"
             })

    assert {:ok, %Snakepit.Error.ValueError{python_traceback: "File x"}} =
             Parser.parse(%{"type" => "ValueError", "message" => "bad", "traceback" => "File x"})

    assert {:error, :invalid_input} = Parser.parse(%{"message" => "no type"})
    assert {:error, :invalid_input} = Parser.parse(nil)
  end

  test "gRPC error messages: a JSON payload or a Type: message line" do
    assert {:ok, %Snakepit.Error.ValueError{message: "expected positive value"}} =
             Parser.from_grpc_error(%{
               status: :internal,
               message: "ValueError: expected positive value"
             })

    json = ~s({"type": "KeyError", "message": "caf\\u00e9 \\ud83d\\ude00", "traceback": "T\\nB"})

    assert {:ok, %Snakepit.Error.KeyError{message: "café 😀", python_traceback: "T\nB"}} =
             Parser.from_grpc_error(%{status: :unknown, message: json})

    assert {:ok, %Snakepit.Error.PythonException{python_type: "Unknown", message: "odd"}} =
             Parser.from_grpc_error(%{status: :unknown, message: "odd"})

    # Broken JSON is read as a plain message.
    assert {:ok, %Snakepit.Error.PythonException{}} =
             Parser.from_grpc_error(%{status: :unknown, message: ~s({"type": "KeyError")})

    assert {:error, :invalid_input} = Parser.from_grpc_error(%{message: 1})
  end
end
