# embag's front door. `make run` builds everything and runs the demo; `make test` builds and runs
# every test. Both install what is missing first (scripts/install-deps.sh) and rebuild
# incrementally.
#
# Also: `make test-aarch64` (and `make test-armv7`) cross-compiles for 64-bit (32-bit) ARM in
# build-aarch64 (build-armv7) and runs the whole suite under QEMU, then installs and builds
# examples/consumer against the install; `make test-install` does the install check for this
# machine; `make install PREFIX=...`.
#
# `make tune SHAPES=bench/shapes/tune-small.txt OUT=tuning.json [BUDGET=10m] [ISA=avx2]
# [TUNE_ARGS=...]` retunes the forward schedules for this machine (tools/tune/, embag-tune);
# `make ... TUNING=tuning.json` builds with the result. `make test-tune-bundle` runs the ARM
# bundle round trip (bundle, runner under qemu-aarch64, collect, a cross build with it).
#
# Knobs: BUILD_DIR (default build), BUILD_TYPE (Release), ISAS
# (semicolon list of ISAs to compile; empty, the default, means every ISA of this machine's
# architecture, as CMakeLists.txt decides -- the cache entry is dropped so an earlier ISAS does
# not stick; a development build may pick one), WERROR (ON in CI), JOBS (parallel build jobs),
# CMAKE_ARGS (anything else for CMake), PREFIX (for make install), TUNING (a tuning file from
# embag-tune; the cache entry is dropped when it is not given, like ISAS).

BUILD_DIR ?= build
BUILD_TYPE ?= Release
ISAS ?=
TUNING ?=
WERROR ?= OFF
CMAKE_ARGS ?=
JOBS ?= $(shell nproc)
PREFIX ?= /usr/local
VENV := .venv
CMAKE := $(VENV)/bin/cmake
CTEST := $(VENV)/bin/ctest
# Ninja (and CMake) from the project's .venv, for CMake's presets too.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: all deps configure generators build run test test-promises bench info install check-ptx \
	test-gpu-emulated \
	test-install format clean deps-clang bench-venv bench-report test-sanitize test-tsan fuzz $(foreach a,aarch64 armv7,deps-$(a) configure-$(a) build-$(a) test-$(a))

all: build

deps:
	@scripts/install-deps.sh

# Configuring again is cheap and picks up changed knobs; CMake keeps the build incremental.
configure: deps
	@mkdir -p $(BUILD_DIR)
	@$(CMAKE) -S . -B $(BUILD_DIR) -G Ninja \
	  -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) \
	  $(if $(ISAS),-DEMBAG_ISAS="$(ISAS)",-UEMBAG_ISAS) -DEMBAG_WERROR=$(WERROR) \
	  $(if $(TUNING),-DEMBAG_TUNING_FILE=$(abspath $(TUNING)),-UEMBAG_TUNING_FILE) $(CMAKE_ARGS) \
	  > $(BUILD_DIR)/configure.log 2>&1 \
	  || (cat $(BUILD_DIR)/configure.log; exit 1)

build: configure
	@$(CMAKE) --build $(BUILD_DIR) --parallel $(JOBS)

run: build
	$(BUILD_DIR)/tools/embag demo

test: build
	$(CTEST) --test-dir $(BUILD_DIR) --output-on-failure --parallel $(JOBS)

# The tests again on kernels compiled with Halide's check_unsafe_promises: every bound the
# kernels take on trust from the runtime's validation (index in range, position inside the
# input) is checked, so a validation gap fails a test instead of reading out of bounds. One ISA
# is enough: the promises are in the algorithm, not the schedule. CPU kernels only: Halide cannot
# put a promise's check (a call into its runtime) inside a GPU kernel; the GPU kernels' bounds are
# checked by Oclgrind instead (ctest -L gpu-emulated).
test-promises:
	$(MAKE) test BUILD_DIR=build-promises ISAS=avx2 \
	  CMAKE_ARGS="-DEMBAG_CHECK_PROMISES=ON -DEMBAG_BUILD_BENCHMARKS=OFF -DEMBAG_GPU_ISAS="

# ---- Sanitizers and fuzzing (clang 14 from Debian: scripts/install-deps.sh --clang) ------------
# The runtime, tools and tests instrumented; the generators and Halide's kernels are not (see
# CMakeLists.txt). One ISA: the instrumented code is the same for every ISA.
SAN_ISA ?= avx2
# No GPU kernels there: the GPU path is tested by the gpu-emulated tests of make test (POCL's own
# allocations would be leak reports), and CUB under clang's sanitizers is not embag's code. No
# Python extension either: an instrumented module cannot load into an uninstrumented Python.
SAN_CMAKE := -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DEMBAG_BUILD_BENCHMARKS=OFF -DEMBAG_GPU_ISAS= -DEMBAG_BUILD_PYTHON=OFF
# halt_on_error: the first report fails the test; no suppressions anywhere.
export ASAN_OPTIONS ?= halt_on_error=1:detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS ?= halt_on_error=1:second_deadlock_stack=1

deps-clang:
	@scripts/install-deps.sh --clang

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-sanitize: deps-clang
	$(MAKE) test BUILD_DIR=build-asan ISAS=$(SAN_ISA) BUILD_TYPE=RelWithDebInfo \
	  CMAKE_ARGS="$(SAN_CMAKE) -DEMBAG_SANITIZE=address,undefined $(CMAKE_ARGS)"

# The concurrency test (and the other suites that start threads) under ThreadSanitizer.
TSAN_TESTS := embag_test_concurrency embag_test_npy
test-tsan: deps-clang
	$(MAKE) configure BUILD_DIR=build-tsan ISAS=$(SAN_ISA) BUILD_TYPE=RelWithDebInfo \
	  CMAKE_ARGS="$(SAN_CMAKE) -DEMBAG_SANITIZE=thread $(CMAKE_ARGS)"
	$(CMAKE) --build build-tsan --parallel $(JOBS) --target $(TSAN_TESTS)
	@echo "== TSan suppressions in use (tests/tsan.supp; TSan reports how often each matched):"
	@grep -v '^#' tests/tsan.supp | sed '/^$$/d; s/^/   /'
	@for t in $(TSAN_TESTS); do echo "== $$t under ThreadSanitizer"; \
	  TSAN_OPTIONS="$(TSAN_OPTIONS):suppressions=$(abspath tests/tsan.supp):print_suppressions=1" \
	  build-tsan/tests/$$t || exit 1; done

# Builds the libFuzzer targets of fuzz/ (clang, -fsanitize=fuzzer,address,undefined, kernels for
# one ISA) in $(FUZZ_DIR) (build-fuzz) and runs each for FUZZ_SECONDS on a copy of its committed seed corpus
# (new inputs go to $(FUZZ_DIR)/corpus/<fuzzer>, the committed corpus is never changed).
FUZZ_SECONDS ?= 60
FUZZ_DIR ?= build-fuzz
FUZZERS := fuzz_npy fuzz_dlpack fuzz_calls
fuzz: deps-clang
	$(MAKE) configure BUILD_DIR=$(FUZZ_DIR) ISAS=$(SAN_ISA) BUILD_TYPE=RelWithDebInfo \
	  CMAKE_ARGS="$(SAN_CMAKE) -DEMBAG_BUILD_FUZZERS=ON -DEMBAG_BUILD_TOOLS=ON $(CMAKE_ARGS)"
	$(CMAKE) --build $(FUZZ_DIR) --parallel $(JOBS) --target $(FUZZERS)
	@for f in $(FUZZERS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$f && cp -r fuzz/corpus/$$f/. $(FUZZ_DIR)/corpus/$$f/ ; \
	  echo "== $$f for $(FUZZ_SECONDS) s (log: $(FUZZ_DIR)/$$f.log)"; \
	  (cd $(FUZZ_DIR) && ./fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$$f- corpus/$$f > $$f.log 2>&1); status=$$?; \
	  grep -E "DONE|stat::number_of_executed_units|stat::new_units_added" $(FUZZ_DIR)/$$f.log; \
	  if [ $$status -ne 0 ]; then tail -60 $(FUZZ_DIR)/$$f.log; exit 1; fi; \
	done

# ---- Benchmarks against peers -----------------------------------------------------------------
# The benchmarks' peers come from .venv-torch, the one PyTorch environment (scripts/install-deps.sh
# --bench, the same as --torch: PyTorch pinned to FBGEMM's compatibility table, fbgemm-gpu-cpu,
# matplotlib, pytest); never needed by make test.
bench-venv:
	@scripts/install-deps.sh --bench

# Builds the benchmarks in $(BENCH_BUILD_DIR) linked with .venv-torch's libtorch, runs
# bench_forward and bench_backward on bench/shapes/report.txt (embag, the gather loop, PyTorch 2.x
# and FBGEMM's table-batched operator in one process on the same memory; table rows sized from
# this CPU's L3 as sysfs reports it) and writes bench/results/<vendor>-<isa>/REPORT.md with its
# PNG plots (bench/report.py), and that report into README.md's section for this CPU kind; then
# the quantized-table rows (bench_forward --quantized on bench/shapes/report-quantized.txt) and
# the table-batched rows (bench/tbe_batched_bench.py on the Python extension, built too:
# embag's TableBatchedEmbeddingBags against FBGEMM's TBE module and a PyTorch loop) and the
# TorchRec rows (bench/torchrec_bench.py: training steps of a DLRM-like collection sharded on 2
# processes, embag's TorchRec kernel against FBGEMM's on the same plan). About 21 minutes on a
# 2-core machine; nothing else should run.
# BENCH_ISAS picks the kernels compiled (default: every ISA of this machine; the runtime picks
# the best), BENCH_REPETITIONS the repetitions per row (medians are reported), BENCH_MIN_TIME the
# seconds each repetition lasts at least, BENCH_SHAPES the shape file.
BENCH_BUILD_DIR ?= build-bench
BENCH_ISAS ?=
BENCH_REPETITIONS ?= 3
BENCH_MIN_TIME ?= 0.2
BENCH_SHAPES ?= bench/shapes/report.txt
bench-report: bench-venv
	@torch_dir=$$(cd / && $(abspath .venv-torch/bin/python) -c \
	  'import os, torch; print(os.path.dirname(torch.__file__))') && \
	$(MAKE) build BUILD_DIR=$(BENCH_BUILD_DIR) ISAS="$(BENCH_ISAS)" \
	  CMAKE_ARGS="-DEMBAG_GPU_ISAS= -DEMBAG_BENCH_TORCH_DIR=$$torch_dir $(CMAKE_ARGS)"
	.venv-torch/bin/python bench/report.py --build $(BENCH_BUILD_DIR) --out bench/results \
	  --shapes $(BENCH_SHAPES) --repetitions $(BENCH_REPETITIONS) --min-time $(BENCH_MIN_TIME) \
	  --readme README.md \
	  --command "make bench-report$(if $(BENCH_ISAS), BENCH_ISAS=$(BENCH_ISAS))$(if $(filter-out bench/shapes/report.txt,$(BENCH_SHAPES)), BENCH_SHAPES=$(BENCH_SHAPES))"

install: build
	$(CMAKE) --install $(BUILD_DIR) --prefix $(PREFIX)

# Installs into a scratch prefix, moves it (the package must be relocatable) and builds and runs
# examples/consumer against it with CMake and with pkg-config; checks the libraries' architecture,
# duplicate symbols and hidden internals.
test-install: build
	scripts/check-install.sh $(BUILD_DIR)

# ---- ARM: Halide's two-build pattern ----------------------------------------------------------
# The host build's generators (only that target) compile the kernels for the ARM target; the
# Debian cross toolchain compiles everything else (CMakePresets.json: presets aarch64, armv7).
# make test-aarch64 / make test-armv7: install what is missing, cross-build in build-<arch>, run
# the whole suite under QEMU (CMake runs every target program through the toolchain file's
# CMAKE_CROSSCOMPILING_EMULATOR), then the install check for that architecture's package.
CROSS_ARCHS := aarch64 armv7
TOOLCHAIN_aarch64 := cmake/toolchains/aarch64-linux-gnu.cmake
TOOLCHAIN_armv7 := cmake/toolchains/arm-linux-gnueabihf.cmake

generators: configure
	@$(CMAKE) --build $(BUILD_DIR) --target embag_generators

$(addprefix deps-,$(CROSS_ARCHS)): deps-%:
	@scripts/install-deps.sh --$*

$(addprefix configure-,$(CROSS_ARCHS)): configure-%: deps-% generators
	@mkdir -p build-$*
	@$(CMAKE) --preset $* -B build-$* \
	  -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -Dembag-halide_generators_DIR=$(abspath $(BUILD_DIR))/cmake \
	  -DEMBAG_WERROR=$(WERROR) $(CMAKE_ARGS) \
	  > build-$*/configure.log 2>&1 \
	  || (cat build-$*/configure.log; exit 1)

$(addprefix build-,$(CROSS_ARCHS)): build-%: configure-%
	@$(CMAKE) --build build-$* --parallel $(JOBS)

$(addprefix test-,$(CROSS_ARCHS)): test-%: build-%
	$(CTEST) --test-dir build-$* --output-on-failure --parallel $(JOBS)
	scripts/check-install.sh build-$* $(TOOLCHAIN_$*)

# Every CUDA kernel's PTX assembled by ptxas for its capability and for sm_90, failing on any
# register spill (tools/check_ptx.py prints registers per kernel); then the arm-64-linux CUDA
# kernels (Jetson-class boards), compiled by the host generators, checked the same way.
check-ptx: build
	$(VENV)/bin/python tools/check_ptx.py $(BUILD_DIR)
	$(VENV)/bin/python tools/check_ptx.py $(BUILD_DIR) \
	  --generators $(BUILD_DIR)/generators/embag_generators --target arm-64-linux-cuda-cuda_capability_86

# The GPU schedules on POCL (OpenCL on the CPU) and the Oclgrind subset only (make test runs them
# too, with everything else).
test-gpu-emulated: build
	$(CTEST) --test-dir $(BUILD_DIR) --output-on-failure -L gpu-emulated

bench: build
	$(BUILD_DIR)/bench/bench_forward --shapes=bench/shapes/perf.txt

info: build
	$(BUILD_DIR)/tools/embag info

# ---- Retuning (tools/tune/) -------------------------------------------------------------------
# make tune: embag-tune on SHAPES (a shape file, comma-separated for several) within BUDGET,
# writing OUT; ISA picks another ISA of this CPU; TUNE_ARGS passes anything else (--modes,
# --dtypes, --indices/--offsets, --timing-lock ...). Only the tool and the generators are built.
SHAPES ?= bench/shapes/tune-small.txt
OUT ?= tuning.json
BUDGET ?= 10m
ISA ?=
TUNE_ARGS ?=
.PHONY: tune test-tune-bundle
tune: configure
	@$(CMAKE) --build $(BUILD_DIR) --parallel $(JOBS) --target embag_tune
	$(BUILD_DIR)/tools/tune/embag-tune --shapes $(SHAPES) --out $(OUT) --budget $(BUDGET) \
	  --work $(BUILD_DIR)/tune-work $(if $(ISA),--isa $(ISA)) $(TUNE_ARGS)

# The ARM bundle round trip, plumbing only (QEMU timings mean nothing): embag-tune --isa neon
# --bundle with two candidates, the static runner under qemu-aarch64, --collect, the tuning file
# checked by the build's own reader, then the aarch64 cross build configured with it.
test-tune-bundle: configure
	@$(CMAKE) --build $(BUILD_DIR) --parallel $(JOBS) --target embag_tune
	scripts/test-tune-bundle.sh $(BUILD_DIR)

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD_DIR)

# ---- Python -----------------------------------------------------------------------------------
# make python: builds the embag Python package with scikit-build-core (pyproject.toml; every ISA
# unless ISAS says otherwise) in build-python and installs it into .venv, as `pip install .`
# would, but incrementally (no build isolation: the build requirements are in .venv already).
# make test-python: the whole pytest suite, the PyTorch drop-in included, on the package staged in
# $(BUILD_DIR)/python by `make build` (so the kernels are compiled once), with PyTorch from
# .venv-torch (scripts/install-deps.sh --torch), the environment make bench-report uses too.
# `make test` runs the torch-free part via CTest.
# make test-torchrec: the TorchRec tests alone (tests/python/test_torchrec*.py: embag.torchrec
# inside TorchRec's DistributedModelParallel, a 2- and a 4-process gloo job on 127.0.0.1 under a
# deadline that kills a hung rank), in the same .venv-torch: TorchRec needs the torch and
# fbgemm-gpu-cpu that the drop-in tests and the benchmarks pin, and a second 5 GiB environment
# would only install them again. make test-python runs them as its last step (CI runs them once,
# there).
.PHONY: python test-python test-torchrec
python: deps
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-build-isolation \
	  --no-deps -Cbuild-dir=build-python $(if $(ISAS),-Ccmake.define.EMBAG_ISAS="$(ISAS)") .

TORCHREC_TESTS := $(sort $(wildcard tests/python/test_torchrec*.py))
PYTEST_TORCH = PYTHONPATH=$(abspath $(BUILD_DIR))/python PYTHONDONTWRITEBYTECODE=1 \
	  .venv-torch/bin/python -m pytest -p no:cacheprovider

test-python: build
	@scripts/install-deps.sh --torch
	$(PYTEST_TORCH) tests/python $(addprefix --ignore=,$(TORCHREC_TESTS))
	$(PYTEST_TORCH) $(TORCHREC_TESTS)

test-torchrec: build
	@scripts/install-deps.sh --torch
	$(PYTEST_TORCH) $(TORCHREC_TESTS)
