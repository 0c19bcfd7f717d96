"""The worker's cost of a call's parameters: parse the request bytes and decode
the arguments, on one wire format per run.

Usage: params_wire.py old|new STUBS_DIR, where ``old`` is a map of JSON ``Any``
values (one per parameter, the proto at 53a6d65) and ``new`` one JSON object
(``parameters_json``); STUBS_DIR holds that proto's Python stubs.
``bench/params_wire.sh`` makes both and runs this twice (two interpreters,
since both stubs define the same proto file name)."""

from __future__ import annotations

import importlib
import json
import sys
import timeit
from typing import Any, Callable, Dict

JSON_TYPE_URL = "type.googleapis.com/snakepit.json"
REPEATS = 20_000
_decode = json.JSONDecoder().decode


def sample_params(n: int) -> Dict[str, Any]:
    """n parameters mixing integers, strings and lists."""
    return {f"key_{i}": (i if i % 3 == 0 else f"value {i}" if i % 3 == 1 else [i, i + 1.5]) for i in range(n)}


def old_request(pb: Any, params: Dict[str, Any]) -> bytes:
    request = pb.ExecuteToolRequest(tool_name="t")
    for key, value in params.items():
        request.parameters[key].type_url = JSON_TYPE_URL
        request.parameters[key].value = json.dumps(value).encode()
    return request.SerializeToString()


def new_request(pb: Any, params: Dict[str, Any]) -> bytes:
    return pb.ExecuteToolRequest(tool_name="t", parameters_json=json.dumps(params).encode()).SerializeToString()


def old_decode(pb: Any, data: bytes) -> Dict[str, Any]:
    params = pb.ExecuteToolRequest.FromString(data).parameters
    args: Dict[str, Any] = {}
    for key in params:
        raw = params[key].value
        args[key] = _decode(raw.decode()) if raw else None
    return args


def new_decode(pb: Any, data: bytes) -> Dict[str, Any]:
    raw = pb.ExecuteToolRequest.FromString(data).parameters_json
    return _decode(raw.decode()) if raw else {}


def main(which: str, stubs: str) -> None:
    sys.path.insert(0, stubs)
    pb = importlib.import_module("snakepit_bridge_pb2")
    build: Callable[[Any, Dict[str, Any]], bytes] = old_request if which == "old" else new_request
    decode: Callable[[Any, bytes], Dict[str, Any]] = old_decode if which == "old" else new_decode
    for n in (1, 3, 10, 50):
        params = sample_params(n)
        data = build(pb, params)
        assert decode(pb, data) == params
        seconds = min(timeit.repeat(lambda: decode(pb, data), number=REPEATS, repeat=5))
        print(f"{which} {n:>3} params: {len(data):>5} bytes, parse+decode {seconds / REPEATS * 1e6:6.2f} us")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
