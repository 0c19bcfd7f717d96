"""The facts of the wire contract (``proto/snakepit_bridge.proto``) that the
generated stubs do not carry: the type URLs of values, the Python error
object and the request metadata keys. The native runtime's copy is ``c_src/core/wire.hpp``;
``test/python/test_wire_facts.py`` checks the two agree.

The error object is a JSON object of three strings,
``{"type": CLASS_NAME, "message": STR, "traceback": TEXT}``. It travels:

* as ``ExecuteToolResponse.error_message`` of a failed unary call;
* as the status details of a failed stream (gRPC status ``UNKNOWN``), cut to
  ``MAX_STATUS_MESSAGE_CHARS`` / ``MAX_STATUS_TRACEBACK_CHARS`` because
  clients cap trailing metadata (8 KiB by default);
* with ``"status": "error"`` added, as a worker's startup line.
"""

from __future__ import annotations

import json
import traceback
from typing import Dict, Optional

__all__ = [
    "BINARY_TYPE_URL",
    "CHUNK_TYPE_KEY",
    "CORRELATION_ID_KEY",
    "ERROR_FIELDS",
    "JSON_TYPE_URL",
    "MAX_STATUS_MESSAGE_CHARS",
    "MAX_STATUS_TRACEBACK_CHARS",
    "THREAD_SENSITIVE_KEY",
    "THREAD_SENSITIVE_VALUE",
    "error_json",
    "error_object",
    "stream_error_json",
]

JSON_TYPE_URL = "type.googleapis.com/snakepit.json"
BINARY_TYPE_URL = "type.googleapis.com/snakepit.binary"
# A ToolChunk of raw bytes carries BINARY_TYPE_URL in its metadata under this key.
CHUNK_TYPE_KEY = "type_url"

# ExecuteToolRequest.metadata keys (upstream's names): the call's correlation
# id, and THREAD_SENSITIVE_VALUE when the tool must run on the main thread.
CORRELATION_ID_KEY = "correlation_id"
THREAD_SENSITIVE_KEY = "thread_sensitive"
THREAD_SENSITIVE_VALUE = "true"

# The error object's fields: the exception's class name, its message, its traceback.
ERROR_FIELDS = ("type", "message", "traceback")

MAX_STATUS_MESSAGE_CHARS = 1500
MAX_STATUS_TRACEBACK_CHARS = 3000


def error_object(
    exc: BaseException,
    tb: Optional[str] = None,
    *,
    type_name: Optional[str] = None,
    max_message: Optional[int] = None,
    max_traceback: Optional[int] = None,
) -> Dict[str, str]:
    """The error object of ``exc``: ``type_name`` defaults to its class name,
    ``tb`` to the traceback being handled (call it inside ``except`` or pass
    the text)."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the error
        message = repr(exc)
    if tb is None:
        tb = traceback.format_exc()
    if max_message is not None and len(message) > max_message:
        message = message[:max_message] + "..."
    if max_traceback is not None and len(tb) > max_traceback:
        tb = "..." + tb[-max_traceback:]
    return dict(zip(ERROR_FIELDS, (type_name or type(exc).__name__, message, tb)))


def error_json(exc: BaseException) -> str:
    """The error object of a unary reply, as JSON. Call inside ``except``."""
    return json.dumps(error_object(exc))


def stream_error_json(exc: BaseException) -> str:
    """The error object of a failed stream's status details, as JSON, cut to
    fit trailing metadata. Call inside ``except``."""
    return json.dumps(error_object(exc, max_message=MAX_STATUS_MESSAGE_CHARS, max_traceback=MAX_STATUS_TRACEBACK_CHARS))
