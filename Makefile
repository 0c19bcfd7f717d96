# Snakepit native: build, test and demo entry points.
#   make demo   install what is missing, build, run a pool and print results
#   make test   install what is missing, build, run every suite
#   make bench  side-by-side benchmarks (not part of make test)
#   make fuzz   (not part of make test) the codec under libFuzzer (fuzz-codec) and
#               random argument terms through echo with a printed seed (fuzz-terms)

SHELL := /bin/bash
export LANG ?= C.UTF-8
export LC_ALL ?= C.UTF-8

PYTHON ?= /usr/bin/python3
BUILD := _build/native
GEN := $(BUILD)/gen
OBJ := $(BUILD)/obj
PRIV := priv
NIF := $(PRIV)/snakepit_nif.so
# The parent of each worker process (reports its exit status): c_src/guard.
GUARD := $(PRIV)/snakepit_worker_guard
PY_STUBS := priv/python/snakepit_bridge_pb2.py priv/python/snakepit_bridge_pb2_grpc.py

DEBIAN_PACKAGES := elixir erlang-dev erlang-src g++ make pkg-config libgrpc++-dev protobuf-compiler \
  protobuf-compiler-grpc libprotobuf-dev libfmt-dev doctest-dev libsimdjson-dev \
  python3-grpcio python3-protobuf python3-numpy python3-pytest

ERTS_INCLUDE = $(shell erl -noshell -eval 'io:format("~ts/erts-~ts/include", [code:root_dir(), erlang:system_info(version)]), halt().' 2>/dev/null)
PKGS := grpc++ protobuf simdjson fmt
CXXFLAGS ?= -O2 -g
CXXFLAGS += -std=c++20 -fPIC -Wall -Wextra -fvisibility=hidden -I$(GEN) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread

CORE_SRC := $(wildcard c_src/core/*.cpp) $(wildcard c_src/codec/*.cpp)
NIF_SRC := $(wildcard c_src/nif/*.cpp) $(wildcard c_src/transport/*.cpp)
TEST_SRC := $(wildcard c_src/test/*.cpp)
GEN_SRC := $(GEN)/snakepit_bridge.pb.cc $(GEN)/snakepit_bridge.grpc.pb.cc
CORE_OBJ := $(CORE_SRC:%.cpp=$(OBJ)/%.o)
NIF_OBJ := $(NIF_SRC:%.cpp=$(OBJ)/%.o) $(GEN_SRC:$(GEN)/%.cc=$(OBJ)/gen/%.o)
TEST_OBJ := $(TEST_SRC:%.cpp=$(OBJ)/%.o)
# Transport code that needs no channel (result classification): unit-tested with core.
TRANSPORT_PURE_SRC := c_src/transport/call_result.cpp
UNIT_TESTS := $(BUILD)/unit_tests
# The same unit tests under AddressSanitizer and UBSan.
SAN := $(BUILD)/sanitize
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_OBJ := $(CORE_SRC:%.cpp=$(SAN)/%.o) $(TEST_SRC:%.cpp=$(SAN)/%.o) $(TRANSPORT_PURE_SRC:%.cpp=$(SAN)/%.o)
SAN_TESTS := $(SAN)/unit_tests

.PHONY: all native deps test unit-test sanitize-test python-test elixir-test demo bench clean format fuzz-terms

all: native

# What the Mix compiler runs.
native: $(NIF) $(GUARD) $(PY_STUBS)

deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y $$missing; \
	fi

$(GEN_SRC) &: proto/snakepit_bridge.proto
	@mkdir -p $(GEN)
	protoc -I proto --cpp_out=$(GEN) --grpc_out=$(GEN) --plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) $<

$(PY_STUBS) &: proto/snakepit_bridge.proto
	protoc -I proto --python_out=priv/python --grpc_out=priv/python \
	  --plugin=protoc-gen-grpc=$$(command -v grpc_python_plugin) $<

$(OBJ)/gen/%.o: $(GEN)/%.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -w -c $< -o $@

$(OBJ)/c_src/nif/%.o: c_src/nif/%.cpp $(GEN_SRC)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -I$(ERTS_INCLUDE) -MMD -MP -c $< -o $@

$(OBJ)/%.o: %.cpp $(GEN_SRC)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MMD -MP -c $< -o $@

$(NIF): $(CORE_OBJ) $(NIF_OBJ)
	@mkdir -p $(PRIV)
	$(CXX) -shared -o $@ $^ $(LDLIBS)

$(GUARD): c_src/guard/worker_guard.cpp c_src/core/child_fds.hpp
	@mkdir -p $(PRIV)
	$(CXX) -std=c++20 -O2 -Wall -Wextra $(shell pkg-config --cflags fmt 2>/dev/null) -o $@ $< $(shell pkg-config --libs fmt 2>/dev/null)

$(UNIT_TESTS): $(CORE_OBJ) $(TEST_OBJ) $(TRANSPORT_PURE_SRC:%.cpp=$(OBJ)/%.o)
	$(CXX) -o $@ $^ $(LDLIBS)

$(SAN)/%.o: %.cpp $(GEN_SRC)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(SAN_FLAGS) -MMD -MP -c $< -o $@

$(SAN_TESTS): $(SAN_OBJ)
	$(CXX) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

-include $(shell find $(OBJ) $(SAN) -name '*.d' 2>/dev/null)

# The pool tests start their workers through $(GUARD) (SNAKEPIT_WORKER_GUARD).
unit-test: $(UNIT_TESTS) $(GUARD)
	SNAKEPIT_WORKER_GUARD=$(GUARD) $(UNIT_TESTS)

sanitize-test: $(SAN_TESTS) $(GUARD)
	SNAKEPIT_WORKER_GUARD=$(GUARD) ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(SAN_TESTS)

# Workers serve from grpc's core layer; the second runs force their
# grpc.server fallback (SNAKEPIT_WORKER_SERVER=fallback), so neither path
# rots. ExUnit's second run is the worker-facing modules (tag :worker_path).
python-test: $(PY_STUBS)
	$(PYTHON) -m pytest -q test/python
	SNAKEPIT_WORKER_SERVER=fallback $(PYTHON) -m pytest -q test/python

elixir-test: native
	mix test
	SNAKEPIT_WORKER_SERVER=fallback mix test --only worker_path

test: deps
	$(MAKE) -j2 native
	$(MAKE) -j2 unit-test
	$(MAKE) -j2 sanitize-test
	$(MAKE) python-test
	$(MAKE) elixir-test

# The argument encoder against random terms (test/snakepit/encoder_fuzz_test.exs,
# which `make test` runs with a fixed seed). SNAKEPIT_FUZZ_SEED=n repeats a run;
# SNAKEPIT_FUZZ_ITERATIONS sets its length (20,000 take about half a minute).
fuzz-terms: native
	@seed=$${SNAKEPIT_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	iterations=$${SNAKEPIT_FUZZ_ITERATIONS:-50000}; \
	echo "fuzz-terms: SNAKEPIT_FUZZ_SEED=$$seed SNAKEPIT_FUZZ_ITERATIONS=$$iterations"; \
	SNAKEPIT_FUZZ_SEED=$$seed SNAKEPIT_FUZZ_ITERATIONS=$$iterations mix test test/snakepit/encoder_fuzz_test.exs

demo: deps
	$(MAKE) native
	mix run --no-start scripts/demo.exs

# Benchmarks (about 5 minutes; see bench/README.md). Helpers go to
# _build/bench/bin, raw results to bench/results/latest.json.
bench: deps
	$(MAKE) native
	$(MAKE) -f bench/Makefile
	MIX_ENV=bench mix run --no-start bench/run.exs

# Coverage-guided fuzzing (libFuzzer from Debian's clang, with ASan and
# UBSan) of the codec: JSON replies, stream chunks, the Python error object
# and the writers (c_src/fuzz/). Each target runs FUZZ_SECONDS on its
# committed corpus (fuzz/corpus/<target>, read only) plus a scratch one under
# $(FUZZ); any crash or broken invariant fails the run and leaves its input in
# $(FUZZ)/artifacts. `make fuzz-merge` folds what runs found into the
# committed corpus, minimized to the inputs that keep its edge coverage
# (hit counts ignored: -use_counters=0), so the repository's copy stays
# small; the hand-made seed-* inputs are always kept.
FUZZ_PACKAGES := clang libclang-rt-14-dev
FUZZ_CXX := clang++
FUZZ := _build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := json_reply stream_chunk python_error writers
FUZZ_FLAGS := -std=c++20 -O1 -g -Wall -Wextra -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  $(shell pkg-config --cflags simdjson fmt 2>/dev/null)
FUZZ_LIB_OBJ := $(FUZZ)/obj/codec/json.o $(FUZZ)/obj/core/python_error.o
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ)/bin/%)
.SECONDARY: $(FUZZ_LIB_OBJ)
FUZZ_RUN_FLAGS := -max_len=8192 -timeout=30 -rss_limit_mb=2048 -dict=fuzz/json.dict -print_final_stats=1

.PHONY: fuzz fuzz-codec fuzz-deps fuzz-build fuzz-merge

fuzz: fuzz-codec fuzz-terms

fuzz-deps:
	$(MAKE) deps DEBIAN_PACKAGES="$(FUZZ_PACKAGES)"

$(FUZZ)/obj/%.o: c_src/%.cpp
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ)/bin/%: c_src/fuzz/%.cpp $(FUZZ_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer -MMD -MP -MF $@.d $< $(FUZZ_LIB_OBJ) -o $@ \
	  $(shell pkg-config --libs simdjson fmt 2>/dev/null)

-include $(shell find $(FUZZ) -name '*.d' 2>/dev/null)

fuzz-build: $(FUZZ_BINS)

fuzz-codec: fuzz-deps
	$(MAKE) fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ)/corpus/$$t $(FUZZ)/artifacts/$$t; \
	  echo "fuzz $$t for $(FUZZ_SECONDS) s"; \
	  $(FUZZ)/bin/$$t $(FUZZ_RUN_FLAGS) -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=$(FUZZ)/artifacts/$$t/ $(FUZZ)/corpus/$$t fuzz/corpus/$$t \
	    > $(FUZZ)/$$t.log 2>&1 || { tail -n 40 $(FUZZ)/$$t.log; echo "fuzz $$t: FINDING, see $(FUZZ)/artifacts/$$t"; exit 1; }; \
	  grep 'cov:' $(FUZZ)/$$t.log | tail -n 1; \
	done

fuzz-merge: fuzz-build
	@set -eo pipefail; for t in $(FUZZ_TARGETS); do \
	  rm -rf $(FUZZ)/merged/$$t && mkdir -p $(FUZZ)/merged/$$t $(FUZZ)/corpus/$$t; \
	  $(FUZZ)/bin/$$t -merge=1 -use_counters=0 -max_len=8192 $(FUZZ)/merged/$$t fuzz/corpus/$$t $(FUZZ)/corpus/$$t 2>&1 | tail -n 1; \
	  for seed in fuzz/corpus/$$t/seed-*; do \
	    [ -e "$$seed" ] || continue; \
	    rm -f $(FUZZ)/merged/$$t/$$(sha1sum < $$seed | cut -c1-40); cp $$seed $(FUZZ)/merged/$$t/; \
	  done; \
	  rm -rf fuzz/corpus/$$t && mv $(FUZZ)/merged/$$t fuzz/corpus/$$t; \
	done

format:
	mix format

clean:
	rm -rf $(BUILD) $(NIF) $(GUARD) $(PY_STUBS)
