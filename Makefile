# embag's front door. `make run` builds everything and runs the demo; `make test` builds and runs
# every test. Both install what is missing first (scripts/install-deps.sh) and rebuild
# incrementally.
#
# Knobs: BUILD_DIR (default build), BUILD_TYPE (Release), ISAS (semicolon list of x86 ISAs to
# compile, default all: "avx512;avx2;sse41"; a development build may pick one), WERROR (ON in CI),
# JOBS (parallel build jobs), CMAKE_ARGS (anything else for CMake).

BUILD_DIR ?= build
BUILD_TYPE ?= Release
ISAS ?= avx512;avx2;sse41
WERROR ?= OFF
CMAKE_ARGS ?=
JOBS ?= $(shell nproc)
VENV := .venv
CMAKE := $(VENV)/bin/cmake
CTEST := $(VENV)/bin/ctest

.PHONY: all deps configure build run test test-promises bench info format clean

all: build

deps:
	@scripts/install-deps.sh

# Configuring again is cheap and picks up changed knobs; CMake keeps the build incremental.
configure: deps
	@mkdir -p $(BUILD_DIR)
	@$(CMAKE) -S . -B $(BUILD_DIR) -G Ninja \
	  -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) \
	  -DHalide_DIR="$$($(VENV)/bin/python -c 'import halide, os; print(os.path.join(halide.install_dir(), "lib64", "cmake", "Halide"))')" \
	  -DEMBAG_X86_ISAS="$(ISAS)" -DEMBAG_WERROR=$(WERROR) $(CMAKE_ARGS) \
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
# is enough: the promises are in the algorithm, not the schedule.
test-promises:
	$(MAKE) test BUILD_DIR=build-promises ISAS=avx2 \
	  CMAKE_ARGS="-DEMBAG_CHECK_PROMISES=ON -DEMBAG_BUILD_BENCHMARKS=OFF"

bench: build
	$(BUILD_DIR)/bench/bench_forward --shapes=bench/shapes/perf.txt

info: build
	$(BUILD_DIR)/tools/embag info

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD_DIR)
