#!/usr/bin/env bash
# Checks embag's installed package the way a user meets it, for one build directory:
#   1. `cmake --install` into a scratch prefix, which is then moved (the package must be
#      relocatable: nothing may remember where it was installed);
#   2. every object in the installed libraries, and the CLI, is for the build's architecture
#      (`file`: x86-64, or ARM aarch64 for a cross build);
#   3. no strong symbol is defined twice across the installed libraries (linking all of them
#      must be clean), and libembag.a exports only the public API (namespace embag, not
#      embag::internal: the runtime is compiled with hidden visibility);
#   4. examples/consumer, a separate CMake project, builds against the moved prefix alone with
#      find_package(embag) and with pkg-config, and runs (under the toolchain's emulator when
#      cross-compiling).
#
# usage: scripts/check-install.sh BUILD_DIR [TOOLCHAIN_FILE]   (the file the build was configured
#        with, for a cross build: cmake/toolchains/<triple>.cmake)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$1
toolchain=${2:-}
cmake=.venv/bin/cmake
ctest=.venv/bin/ctest
export PATH="$PWD/.venv/bin:$PATH"
fail() {
  echo "check-install: FAILED: $*" >&2
  exit 1
}

if [ -n "$toolchain" ]; then
  # The toolchain file is named after the triple, which prefixes its binutils.
  tool_prefix="$(basename "$toolchain" .cmake)-"
  case "$tool_prefix" in
    aarch64-*) arch_words="ARM aarch64" arch_label="aarch64" ;;
    arm-*) arch_words="32-bit LSB .*ARM, EABI5" arch_label="32-bit ARM" ;;
    *) fail "no expected architecture for toolchain $toolchain" ;;
  esac
  toolchain_args=(-DCMAKE_TOOLCHAIN_FILE="$PWD/$toolchain")
else
  arch_words="x86-64"
  arch_label="x86-64"
  tool_prefix=""
  toolchain_args=()
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/embag-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. Install, then move the prefix.
"$cmake" --install "$build_dir" --prefix "$work/staged" > "$work/install.log"
mv "$work/staged" "$work/prefix"
prefix="$work/prefix"
for f in include/embag/embag.h include/embag/export.h lib/libembag.a lib/libembag_kernels.a \
         lib/libembag_halide_runtime.a lib/cmake/embag/embagConfig.cmake \
         lib/cmake/embag/embagConfigVersion.cmake lib/pkgconfig/embag.pc bin/embag; do
  [ -e "$prefix/$f" ] || fail "the install has no $f"
done
echo "check-install: installed $(find "$prefix" -type f | wc -l) files; moved the prefix to $prefix"

# 2. Architecture of every installed object and of the CLI.
for lib in "$prefix"/lib/*.a; do
  name=$(basename "$lib")
  mkdir "$work/objects-$name"
  (cd "$work/objects-$name" && "${tool_prefix}ar" x "$lib")
  total=$(find "$work/objects-$name" -type f | wc -l)
  wrong=$(find "$work/objects-$name" -type f -exec file {} + | grep -v -c "$arch_words" || true)
  [ "$total" -gt 0 ] || fail "$name holds no objects"
  [ "$wrong" -eq 0 ] || fail "$name: $wrong of $total objects are not $arch_label"
  example=$(find "$work/objects-$name" -type f -print -quit)
  echo "check-install: $name: $total objects, all $(file -b "$example" | cut -d, -f1-2)"
done
file -b "$prefix/bin/embag" | grep -q "$arch_words" || fail "bin/embag is not $arch_label"
echo "check-install: bin/embag: $(file -b "$prefix/bin/embag" | cut -d, -f1-2)"

# 3. Duplicate strong definitions across the libraries, and the visibility of libembag.a.
"${tool_prefix}nm" -A --defined-only -g "$prefix"/lib/*.a 2>/dev/null |
  awk 'NF >= 3 && $(NF-1) ~ /^[TDRBC]$/ { print $NF }' | sort | uniq -d > "$work/duplicates.txt"
if [ -s "$work/duplicates.txt" ]; then
  fail "symbols defined in more than one installed object: $(head -5 "$work/duplicates.txt")"
fi
# Global definitions of libembag.a as "visibility name"; the exported ones (DEFAULT) must all be
# API: in namespace embag but not embag::internal (typeinfo and vtables of API classes go with it).
"${tool_prefix}readelf" -sW "$prefix/lib/libembag.a" |
  awk '$5 == "GLOBAL" && $7 != "UND" { print $6, $8 }' > "$work/globals.txt"
awk '$1 == "DEFAULT" { print $2 }' "$work/globals.txt" | c++filt |
  sed -e 's/^typeinfo name for //' -e 's/^typeinfo for //' -e 's/^vtable for //' > "$work/exported.txt"
grep -v '^embag::' "$work/exported.txt" > "$work/not-api.txt" || true
grep '^embag::internal::' "$work/exported.txt" >> "$work/not-api.txt" || true
if [ -s "$work/not-api.txt" ]; then
  fail "libembag.a exports symbols outside the public API: $(head -5 "$work/not-api.txt")"
fi
public=$(wc -l < "$work/exported.txt")
hidden=$(awk '$1 == "HIDDEN"' "$work/globals.txt" | wc -l)
[ "$hidden" -gt 0 ] || fail "libembag.a has no hidden symbols: was it built with hidden visibility?"
echo "check-install: no duplicate strong symbols; libembag.a exports $public public API symbols," \
     "$hidden internal symbols hidden"

# 4. The consumer, from the moved prefix alone.
"$cmake" -S examples/consumer -B "$work/consumer" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DEMBAG_CONSUMER_PKG_CONFIG=ON "${toolchain_args[@]}" \
  > "$work/consumer-configure.log" || { cat "$work/consumer-configure.log"; fail "consumer configure"; }
"$cmake" --build "$work/consumer" > "$work/consumer-build.log" ||
  { cat "$work/consumer-build.log"; fail "consumer build"; }
"$ctest" --test-dir "$work/consumer" --output-on-failure --verbose | grep -v "^UpdateCTestConfiguration\|^Parse\|^Add\|^Constructing\|^Checking\|^Updating"
echo "check-install: passed ($arch_label)"
