#!/usr/bin/env python3
"""Reports which requirements an interpreter already satisfies.

Used by ``mix snakepit.setup``: run with the interpreter the pools use,
``python snakepit_requirements.py [--file REQUIREMENTS_FILE] [REQUIREMENT ...]``.
It prints one tab-separated line per requirement and changes nothing::

    ok        NAME  REQUIREMENT  INSTALLED_VERSION
    missing   NAME  REQUIREMENT
    mismatch  NAME  REQUIREMENT  INSTALLED_VERSION
    skipped   NAME  REQUIREMENT              (its environment marker is false)
    unchecked -     LINE                     (pip options, URLs, editable installs)
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from typing import Iterable, List, Optional, Tuple

try:  # Debian ships packaging; pip vendors it otherwise.
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # pragma: no cover - depends on the interpreter
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement  # type: ignore


def requirement_lines(text: str) -> Iterable[str]:
    """The requirement lines of a requirements file: comments, blank lines
    and line continuations handled as pip does."""
    joined = re.sub(r"\\\n", "", text)
    for raw in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line:
            yield line


def check(line: str) -> Tuple[str, str, str, Optional[str]]:
    """(status, name, requirement, installed version) for one line."""
    if line.startswith("-") or "://" in line or line.startswith("."):
        return ("unchecked", "-", line, None)
    try:
        req = Requirement(line)
    except InvalidRequirement:
        return ("unchecked", "-", line, None)
    if req.marker is not None and not req.marker.evaluate():
        return ("skipped", req.name, line, None)
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return ("missing", req.name, line, None)
    if req.specifier and not req.specifier.contains(installed, prereleases=True):
        return ("mismatch", req.name, line, installed)
    return ("ok", req.name, line, installed)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", action="append", default=[], help="a requirements file")
    parser.add_argument("requirements", nargs="*", help="requirement specifiers")
    args = parser.parse_args(argv)
    lines: List[str] = list(args.requirements)
    for path in args.file:
        with open(path, encoding="utf-8") as handle:
            lines.extend(requirement_lines(handle.read()))
    for line in lines:
        status, name, requirement, installed = check(line)
        fields = [status, name, requirement] + ([installed] if installed else [])
        print("\t".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
