"""The showcase's tools, one mixin per domain (upstream's handler names)."""

from .basic_ops import BasicOpsHandler
from .binary_ops import BinaryOpsHandler
from .concurrent_ops import ConcurrentOpsHandler
from .ml_workflow import MLWorkflowHandler
from .session_ops import SessionOpsHandler
from .streaming_ops import StreamingOpsHandler

__all__ = [
    "BasicOpsHandler",
    "BinaryOpsHandler",
    "ConcurrentOpsHandler",
    "MLWorkflowHandler",
    "SessionOpsHandler",
    "StreamingOpsHandler",
]
