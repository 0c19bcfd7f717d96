defmodule Snakepit.TlsDist do
  @moduledoc """
  Files for TLS distribution (`-proto_dist inet_tls`) in the `:cluster`
  tests: a CA, a node certificate signed by it and the `-ssl_dist_optfile`
  that makes both sides present and verify certificates. Made with OTP's
  `:public_key` (`pkix_test_root_cert/2`, `pkix_test_data/1`), so nothing
  outside OTP is needed.
  """

  # subjectAltName: the peers run on 127.0.0.1, the name the connecting
  # side checks the certificate against.
  @san_oid {2, 5, 29, 17}

  @type ca :: %{cert: binary(), key: term()}

  @doc "A self-signed CA named `name`."
  @spec ca!(String.t()) :: ca()
  def ca!(name), do: public_key().pkix_test_root_cert(String.to_charlist(name), [])

  @doc """
  Writes `<label>.pem`, `<label>.key`, `<label>-ca.pem` and `<label>.conf`
  into `dir`: a node certificate of `ca` and the ssl_dist option file that
  uses it for both roles and trusts `ca` only. Returns the option file's
  path.
  """
  @spec node_files!(Path.t(), String.t(), ca()) :: Path.t()
  def node_files!(dir, label, ca) do
    File.mkdir_p!(dir)
    san = {:Extension, @san_oid, false, [dNSName: ~c"127.0.0.1"]}

    %{server_config: config} =
      public_key().pkix_test_data(%{
        server_chain: %{root: ca, intermediates: [], peer: [extensions: [san]]},
        client_chain: %{root: ca, intermediates: [], peer: []}
      })

    {key_type, key_der} = Keyword.fetch!(config, :key)
    cert = Path.join(dir, "#{label}.pem")
    key = Path.join(dir, "#{label}.key")
    cacert = Path.join(dir, "#{label}-ca.pem")
    File.write!(cert, pem(:Certificate, Keyword.fetch!(config, :cert)))
    File.write!(key, pem(key_type, key_der))
    File.write!(cacert, pem(:Certificate, ca.cert))

    common = [
      certfile: String.to_charlist(cert),
      keyfile: String.to_charlist(key),
      cacertfile: String.to_charlist(cacert),
      verify: :verify_peer,
      secure_renegotiate: true
    ]

    options = [server: common ++ [fail_if_no_peer_cert: true], client: common]
    conf = Path.join(dir, "#{label}.conf")
    File.write!(conf, :io_lib.format(~c"~p.~n", [options]))
    conf
  end

  @doc "VM arguments for TLS distribution with the option file `conf`."
  @spec vm_args(Path.t()) :: [charlist()]
  def vm_args(conf),
    do: [~c"-proto_dist", ~c"inet_tls", ~c"-ssl_dist_optfile", String.to_charlist(conf)]

  defp pem(type, der), do: public_key().pem_encode([{type, der, :not_encrypted}])

  # OTP's public_key, which only the tests use: named at run time so that
  # Snakepit does not declare a dependency on it.
  defp public_key, do: :public_key
end
