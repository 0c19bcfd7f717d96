defmodule Snakepit.BinaryTest do
  use Snakepit.PoolCase, async: false

  test "a binary that is not UTF-8 arrives in Python as bytes and comes back as a binary" do
    bytes = <<0, 255, 1, 254, 128>>
    assert {:ok, ^bytes} = Snakepit.execute("echo_bytes", %{data: bytes})
  end

  test "{:binary, bin} sends even valid UTF-8 as bytes" do
    assert {:ok, "plain text"} = Snakepit.execute("echo_bytes", %{data: {:binary, "plain text"}})
    # echo returns its arguments as JSON: a str passes, bytes cannot.
    assert {:ok, %{"echoed" => %{"data" => "plain text"}}} =
             Snakepit.execute("echo", %{data: "plain text"})

    assert {:error,
            %Snakepit.Error.TypeError{
              category: :python_error,
              details: %{python_type: "TypeError"}
            }} = Snakepit.execute("echo", %{data: {:binary, "plain text"}})
  end

  test "a 50 MB binary round-trips" do
    big = :crypto.strong_rand_bytes(50_000_000)
    assert {:ok, ^big} = Snakepit.execute("echo_bytes", %{data: big}, timeout: 120_000)
  end
end
