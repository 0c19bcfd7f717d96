#!/usr/bin/env python3
"""Snakepit native worker launcher: ``python3 -u grpc_server.py --adapter MODULE.CLASS --socket PATH ...``.

The worker itself is ``snakepit_bridge.worker`` (its docstring states the
contract with the native runtime); this file stays at the path pools run.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if not sys.path or sys.path[0] != _HERE:
    sys.path.insert(0, _HERE)

from snakepit_bridge.worker import main  # noqa: E402

if __name__ == "__main__":
    main()
