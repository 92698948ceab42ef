#!/usr/bin/env bash
# Installs everything embag needs to build and test, on a fresh Debian machine, and nothing twice:
#  - Debian packages (compiler, GoogleTest, Google Benchmark, DLPack header) with apt-get, only
#    those missing;
#  - a project-local Python virtual environment (.venv) holding the pinned Halide wheel (which
#    ships the C++ library and its CMake package), CMake and Ninja from PyPI.
# A stamp inside .venv records the requirements it was built from; a second run with the same
# requirements does nothing.
#
# With --aarch64 (--armv7) it also installs what cross-compiling for 64-bit (32-bit) ARM needs
# (make test-aarch64, make test-armv7): Debian's aarch64-linux-gnu (arm-linux-gnueabihf)
# toolchain, user-mode QEMU to run the target's programs, and the arm64 (armhf) builds of
# GoogleTest and Google Benchmark (Debian multiarch: the architecture is added to dpkg, which only
# widens what apt may install).
#
# With --torch or --bench it (also) creates .venv-torch, the one PyTorch environment
# (scripts/requirements-torch.txt): PyTorch from PyPI pinned to the version FBGEMM's
# compatibility table names for fbgemm-gpu-cpu (FBGEMM's table-batched embedding operator, a
# benchmark peer), pytest for `make test-python`, matplotlib for `make bench-report`, and
# TorchRec (scripts/requirements-torchrec.txt, installed without its declared dependencies so
# that it uses fbgemm-gpu-cpu rather than pulling the CUDA fbgemm-gpu). One environment, so the
# tests, the benchmarks and TorchRec see the same torch. It is separate from .venv, which every
# build uses and which stays small: PyPI's Linux x86-64 torch is the CUDA build (PyPI serves no
# CPU-only wheel under the name torch), whose nvidia-* dependencies make it about 5 GiB
# (measured: 80 s to install on the CI machine's network).
#
# With --clang it also installs clang 14 and its compiler-rt runtimes (AddressSanitizer,
# UndefinedBehaviorSanitizer, ThreadSanitizer, libFuzzer): make test-sanitize, make test-tsan and
# make fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

# OpenCL: the loader and headers the tests' GPU mirror uses, POCL (an OpenCL driver for the CPU)
# on which the GPU schedules are tested without a GPU, and Oclgrind, which checks them for
# out-of-bounds accesses and races. (CUDA needs the CUDA toolkit, which does not come from
# Debian's main archive: without nvcc the build simply has no CUDA kernels.)
debian_packages=(g++ make python3 python3-dev libgtest-dev libgmock-dev libbenchmark-dev
                 libdlpack-dev pkg-config file binutils ocl-icd-opencl-dev opencl-c-headers
                 pocl-opencl-icd oclgrind)
cross_arch=""
with_torch=""
with_bench=""
case "${1:-}" in
  "") ;;
  --aarch64) cross_arch=arm64 cross_triple=aarch64-linux-gnu ;;
  --armv7) cross_arch=armhf cross_triple=arm-linux-gnueabihf ;;
  --torch) with_torch=1 ;;
  --bench) with_bench=1 ;;
  --clang) debian_packages+=(clang-14 libclang-rt-14-dev) ;;
  *) echo "usage: $0 [--aarch64 | --armv7 | --torch | --bench | --clang]" >&2; exit 2 ;;
esac
if [ -n "$cross_arch" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx "$cross_arch"; then
    echo "install-deps: enabling the $cross_arch architecture for Debian's $cross_arch libraries"
    "${sudo_cmd[@]}" dpkg --add-architecture "$cross_arch"
  fi
  debian_packages+=("g++-$cross_triple" qemu-user "libgtest-dev:$cross_arch"
                    "libgmock-dev:$cross_arch" "libbenchmark-dev:$cross_arch")
fi

missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
# A python3 without the venv module (Debian's split packaging) needs python3-venv too.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
# apt-get update fails as a whole when one index does (a mirror caught mid-sync: "File has
# unexpected size"), though apt keeps the lists it did get. Retry a few times, then go on with
# what there is: the install below is what must succeed.
apt_update() {
  for attempt in 1 2 3; do
    if "${sudo_cmd[@]}" apt-get update -qq; then return 0; fi
    echo "install-deps: apt-get update failed (attempt $attempt of 3)" >&2
    sleep $((attempt * 10))
  done
  echo "install-deps: going on with the package lists apt has" >&2
}
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  apt_update
  install=(apt-get install -y -qq --no-install-recommends "${missing[@]}")
  if ! DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" "${install[@]}"; then
    echo "install-deps: apt-get install failed; updating the package lists and trying again" >&2
    sleep 20
    apt_update
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" "${install[@]}"
  fi
fi

# make_venv DIR REQUIREMENTS CHECK [NO_DEPS_REQUIREMENTS]: creates (or updates) the virtual
# environment DIR from the requirements file, then installs NO_DEPS_REQUIREMENTS' packages
# without their declared dependencies (pip cannot say --no-deps per line), unless its stamp says
# it already holds exactly those and CHECK exists. The stamp is both files, concatenated.
make_venv() {
  local dir=$1 requirements=$2 check=$3 no_deps=${4:-}
  local stamp=$dir/.requirements-installed
  if [ -f "$stamp" ] && cat "$requirements" $no_deps | cmp -s - "$stamp" && [ -e "$dir/$check" ]
  then
    return 0
  fi
  echo "install-deps: creating $dir with" \
    "$(cat "$requirements" $no_deps | grep -v "^#" | tr "\n" " ")"
  # (an existing environment is updated in place: venv refuses a DIR that is a symbolic link,
  # as a shared environment linked into a worktree is)
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  if [ -n "$no_deps" ]; then
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$no_deps"
  fi
  cat "$requirements" $no_deps > "$stamp"
}
make_venv .venv scripts/requirements.txt bin/cmake
if [ -n "$with_torch$with_bench" ]; then
  make_venv .venv-torch scripts/requirements-torch.txt bin/pytest scripts/requirements-torchrec.txt
fi
