// gRPC client to Python workers over Unix sockets, callback API.
#pragma once

#include <memory>
#include <string>

#include "../core/transport.hpp"

namespace snakepit::transport {

std::shared_ptr<core::Transport> make_grpc_transport();

}  // namespace snakepit::transport
