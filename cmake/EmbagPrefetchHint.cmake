# Sets the cache hint of a kernel's software prefetches, in the assembly Halide emitted for it.
#
# Halide 21 compiles its prefetch intrinsic through a runtime helper that hard-codes a
# non-temporal hint (llvm.prefetch locality 0: `prefetchnta` on x86-64, `prfm pldl1strm` on
# 64-bit ARM), and offers no way to choose another. A non-temporal prefetch of a line that is
# already in L2/L3 costs more than the load it precedes on Intel server cores (issue 16: ~77% of a
# warm gather's samples on the three `prefetchnta` of the row), and it keeps the prefetched line
# out of the outer caches, where the next bag often finds it. FBGEMM's JIT and the gather loop
# use T0 (locality 3). So the forward kernels are compiled to assembly as well as objects, this
# script swaps the hint, and the build assembles the result (cmake/EmbagKernels.cmake): the
# generators stay the single source, and the instructions are the ones LLVM chose in every other
# respect. tests/check_prefetch_hint.sh disassembles the kernels to check what came out.
#
#   cmake -DIN=<kernel.s> -DOUT=<kernel.hinted.s> -DARCH=<x86-64|arm-64> -DHINT=<t0|nta>
#         -P EmbagPrefetchHint.cmake
#
# HINT=nta keeps Halide's instruction (the file is copied), for measuring one against the other.
# Architectures without a locality hint in their prefetch (32-bit ARM's `pld`) are not passed
# through here.
foreach (arg IN ITEMS IN OUT ARCH HINT)
  if (NOT DEFINED ${arg})
    message(FATAL_ERROR "EmbagPrefetchHint.cmake: -D${arg}=... is required")
  endif ()
endforeach ()

if (ARCH STREQUAL "x86-64")
  set(halide_hint "prefetchnta")
  set(t0_hint "prefetcht0")
elseif (ARCH STREQUAL "arm-64")
  set(halide_hint "prfm\tpldl1strm")
  set(t0_hint "prfm\tpldl1keep")
else ()
  message(FATAL_ERROR "EmbagPrefetchHint.cmake: no prefetch hint rewrite for ARCH=${ARCH}")
endif ()

file(READ "${IN}" text)
if (HINT STREQUAL "t0")
  string(REPLACE "${halide_hint}" "${t0_hint}" text "${text}")
elseif (NOT HINT STREQUAL "nta")
  message(FATAL_ERROR "EmbagPrefetchHint.cmake: HINT must be t0 or nta, not '${HINT}'")
endif ()
file(WRITE "${OUT}" "${text}")
