// gRPC client to Python workers over Unix sockets; its operations complete
// on `queue`, drained by the NIF's queue thread (queue_thread.hpp), which
// must outlive the transport and its connections' calls.
#pragma once

#include <memory>
#include <string>

#include "../core/transport.hpp"

namespace grpc {
class CompletionQueue;
}

namespace snakepit::transport {

std::shared_ptr<core::Transport> make_grpc_transport(grpc::CompletionQueue& queue);

}  // namespace snakepit::transport
