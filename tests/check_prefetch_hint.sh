#!/usr/bin/env bash
# Checks the prefetch instructions of every CPU forward kernel in the kernels' archive, by
# disassembly: each memory-resident (and tuned) variant must prefetch with the intended hint and
# never with the other; each cache-resident variant must issue no prefetch at all. Prints the
# counts per kernel and one kernel's prefetches as they were emitted.
#
#   check_prefetch_hint.sh OBJDUMP ARCHIVE ARCH HINT ISA...
#     ARCH: x86-64 or arm-64;  HINT: t0 or nta (EMBAG_PREFETCH_HINT);  ISA: the CPU ISAs built
set -euo pipefail
objdump=$1 archive=$2 arch=$3 hint=$4
shift 4
isas=("$@")

case "$arch/$hint" in
  x86-64/t0) want='prefetcht0' unwanted='prefetchnta|prefetcht1|prefetcht2' ;;
  x86-64/nta) want='prefetchnta' unwanted='prefetcht0|prefetcht1|prefetcht2' ;;
  arm-64/t0) want='prfm[[:space:]]+pldl1keep' unwanted='prfm[[:space:]]+pld(l1strm|l2|l3)' ;;
  arm-64/nta) want='prfm[[:space:]]+pldl1strm' unwanted='prfm[[:space:]]+pld(l1keep|l2|l3)' ;;
  *) echo "check_prefetch_hint: nothing to check for $arch/$hint" >&2; exit 2 ;;
esac
any_prefetch='prefetch|prfm[[:space:]]'

listing=$(mktemp)
trap 'rm -f "$listing"' EXIT
# Each member's heading, in GNU objdump's form ("name.o:     file format ...") or llvm-objdump's
# ("archive.a(name.o):	file format ..."), becomes "OBJECT name.o".
"$objdump" -d --no-show-raw-insn "$archive" |
  sed -E 's/^(.*\()?([^():]+\.o)\)?:[[:space:]]+file format.*/OBJECT \2/' > "$listing"

failures=0 checked=0 shown=""
# One block per object: from its OBJECT line up to the next.
for object in $(sed -n 's/^OBJECT \(embag_forward_.*\)$/\1/p' "$listing" | sort -u); do
  kernel=${object%%.*}
  cpu=""
  for isa in "${isas[@]}"; do [[ $kernel == *_"$isa" ]] && cpu=$isa; done
  [ -n "$cpu" ] || continue
  body=$(awk -v o="$object" '$1 == "OBJECT" {on = ($2 == o); next} on' "$listing")
  wanted=$(grep -cE "$want" <<< "$body" || true)
  others=$(grep -cE "$unwanted" <<< "$body" || true)
  all=$(grep -cE "$any_prefetch" <<< "$body" || true)
  checked=$((checked + 1))
  if [[ $kernel == *_cache_* ]]; then
    if [ "$all" -ne 0 ]; then
      echo "FAIL $kernel: a cache-resident variant issues $all prefetches"; failures=$((failures + 1))
    fi
  elif [ "$wanted" -eq 0 ] || [ "$others" -ne 0 ]; then
    echo "FAIL $kernel: $wanted prefetches with the $hint hint, $others with another"
    failures=$((failures + 1))
  fi
  if [ -z "$shown" ] && [[ $kernel != *_cache_* ]] && [[ $kernel == embag_forward_sum_f32_i64_* ]]; then
    shown=$kernel
    echo "$kernel, its first prefetches as emitted:"
    grep -E "$any_prefetch" <<< "$body" | head -4
  fi
done
if [ "$checked" -eq 0 ]; then
  echo "FAIL: no CPU forward kernel found in $archive"
  exit 1
fi
echo "$checked CPU forward kernels checked: memory-resident ones prefetch with $hint only," \
     "cache-resident ones not at all; $failures failed"
[ "$failures" -eq 0 ]
