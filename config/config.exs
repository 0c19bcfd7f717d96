import Config

# As upstream, no pool starts unless pooling is enabled.
config :snakepit, pooling_enabled: true

if File.exists?(Path.join(__DIR__, "#{config_env()}.exs")) do
  import_config "#{config_env()}.exs"
end
