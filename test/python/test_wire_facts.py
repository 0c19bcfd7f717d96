"""The wire facts written in both languages agree: c_src/core/wire.hpp
(the native runtime) and snakepit_bridge/wire.py (the worker)."""

from __future__ import annotations

import json
import re
from typing import Dict

from conftest import REPO
from snakepit_bridge import wire

WIRE_HPP = REPO / "c_src" / "core" / "wire.hpp"


def _cpp_strings() -> Dict[str, str]:
    text = WIRE_HPP.read_text()
    found = dict(re.findall(r'std::string_view\s+(k\w+)\s*=\s*"([^"]*)"', text))
    assert found, f"no string constants found in {WIRE_HPP}"
    return found


def test_type_urls_agree() -> None:
    cpp = _cpp_strings()
    assert cpp["kJsonTypeUrl"] == wire.JSON_TYPE_URL
    assert cpp["kBinaryTypeUrl"] == wire.BINARY_TYPE_URL
    assert cpp["kChunkTypeKey"] == wire.CHUNK_TYPE_KEY


def test_metadata_keys_agree() -> None:
    cpp = _cpp_strings()
    assert cpp["kCorrelationIdKey"] == wire.CORRELATION_ID_KEY
    assert cpp["kThreadSensitiveKey"] == wire.THREAD_SENSITIVE_KEY
    assert cpp["kThreadSensitiveValue"] == wire.THREAD_SENSITIVE_VALUE


def test_the_proto_documents_the_same_facts() -> None:
    proto = (REPO / "proto" / "snakepit_bridge.proto").read_text()
    for fact in (wire.JSON_TYPE_URL, wire.BINARY_TYPE_URL, *(f'"{field}"' for field in wire.ERROR_FIELDS)):
        assert fact in proto


def test_error_fields_agree() -> None:
    cpp = _cpp_strings()
    fields = (cpp["kErrorTypeField"], cpp["kErrorMessageField"], cpp["kErrorTracebackField"])
    assert fields == wire.ERROR_FIELDS


def test_error_object_has_the_fields_and_fits_a_stream_status() -> None:
    try:
        raise ValueError("x" * 5000)
    except ValueError as exc:
        unary = json.loads(wire.error_json(exc))
        streamed = json.loads(wire.stream_error_json(exc))
    assert tuple(unary) == wire.ERROR_FIELDS
    assert unary["type"] == "ValueError" and len(unary["message"]) == 5000
    assert "Traceback (most recent call last)" in unary["traceback"]
    assert tuple(streamed) == wire.ERROR_FIELDS
    assert len(streamed["message"]) == wire.MAX_STATUS_MESSAGE_CHARS + 3
    assert len(streamed["traceback"]) <= wire.MAX_STATUS_TRACEBACK_CHARS + 3


def test_error_object_type_name_overrides_the_class() -> None:
    obj = wire.error_object(RuntimeError("boom"), "tb text", type_name="BindError")
    assert obj == {"type": "BindError", "message": "boom", "traceback": "tb text"}


def test_worker_takes_its_fds_from_the_spawner() -> None:
    from snakepit_bridge.worker import parse_args

    args = parse_args(["--adapter", "m.C", "--socket", "/tmp/s", "--ready-fd", "7"])
    assert (args.ready_fd, args.lifeline_fd) == (7, -1)
    try:
        parse_args(["--adapter", "m.C", "--socket", "/tmp/s"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("--ready-fd must be required")
