#!/bin/sh
# The worker's cost of a call's parameters on the wire before and after
# they became one JSON object (bench/README.md, "Parameters as one JSON
# object"): builds Python stubs of the proto at 53a6d65 (a map of JSON Any
# values) and of today's, then times parsing a request and decoding its
# arguments with each, in separate interpreters.
set -eu
PYTHON=${PYTHON:-/usr/bin/python3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/old" "$dir/new"
git show 53a6d65:proto/snakepit_bridge.proto > "$dir/old/snakepit_bridge.proto"
cp proto/snakepit_bridge.proto "$dir/new/"
for v in old new; do
  protoc -I "$dir/$v" --python_out="$dir/$v" "$dir/$v/snakepit_bridge.proto"
  "$PYTHON" bench/python/params_wire.py "$v" "$dir/$v"
done
