#!/usr/bin/env bash
# Checks the prefetch instructions of every CPU forward kernel in the kernels' archive, by
# disassembly: a kernel compiled with prefetch_distance=0 (every default cache-resident variant)
# must issue no prefetch at all; every other one (the default memory-resident variants, and
# tuned kernels of either class whose schedule prefetches) must prefetch with the intended hint
# and never with the other. Which is which comes from the schedule each kernel's registry row
# says it was compiled with (the generator takes the last value of a parameter given twice).
# Prints the counts per kernel and one kernel's prefetches as they were emitted.
#
#   check_prefetch_hint.sh OBJDUMP ARCHIVE KERNEL_TABLE ARCH HINT ISA...
#     KERNEL_TABLE: the generated embag_kernel_table.inc;  ARCH: x86-64 or arm-64;
#     HINT: t0 or nta (EMBAG_PREFETCH_HINT);  ISA: the CPU ISAs built
set -euo pipefail
objdump=$1 archive=$2 table=$3 arch=$4 hint=$5
shift 5
isas=("$@")

case "$arch/$hint" in
  x86-64/t0) want='prefetcht0' unwanted='prefetchnta|prefetcht1|prefetcht2' ;;
  x86-64/nta) want='prefetchnta' unwanted='prefetcht0|prefetcht1|prefetcht2' ;;
  arm-64/t0) want='prfm[[:space:]]+pldl1keep' unwanted='prfm[[:space:]]+pld(l1strm|l2|l3)' ;;
  arm-64/nta) want='prfm[[:space:]]+pldl1strm' unwanted='prfm[[:space:]]+pld(l1keep|l2|l3)' ;;
  *) echo "check_prefetch_hint: nothing to check for $arch/$hint" >&2; exit 2 ;;
esac
any_prefetch='prefetch|prfm[[:space:]]'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Each member's heading, in GNU objdump's form ("name.o:     file format ...") or llvm-objdump's
# ("archive.a(name.o):	file format ..."), starts that member's block; each forward kernel's
# block goes to a file of its own in one pass (the archive's listing runs to millions of lines,
# so it is read once, not once per kernel).
"$objdump" -d --no-show-raw-insn "$archive" |
  sed -E 's/^(.*\()?([^():]+\.o)\)?:[[:space:]]+file format.*/OBJECT \2/' |
  awk -v dir="$work" '
    $1 == "OBJECT" { if (out != "") close(out); out = ($2 ~ /^embag_forward_/) ? dir "/" $2 : ""; next }
    out != "" { print >> out }'

failures=0 checked=0 shown=""
for path in "$work"/embag_forward_*; do
  [ -e "$path" ] || continue
  object=${path##*/}
  kernel=${object%%.*}
  cpu=""
  for isa in "${isas[@]}"; do [[ $kernel == *_"$isa" ]] && cpu=$isa; done
  [ -n "$cpu" ] || continue
  body=$(cat "$path")
  wanted=$(grep -cE "$want" <<< "$body" || true)
  others=$(grep -cE "$unwanted" <<< "$body" || true)
  all=$(grep -cE "$any_prefetch" <<< "$body" || true)
  checked=$((checked + 1))
  schedule=$(sed -n "s/^{\"$kernel\",.*&${kernel}_metadata, \"\([^\"]*\)\".*/\1/p" "$table")
  distance=$(grep -oE 'prefetch_distance=[0-9]+' <<< "$schedule" | tail -1 || true)
  if ! grep -q "^{\"$kernel\"," "$table"; then
    echo "FAIL $kernel: not in the kernel table $table"; failures=$((failures + 1))
  elif [ "$distance" = "prefetch_distance=0" ]; then
    if [ "$all" -ne 0 ]; then
      echo "FAIL $kernel: compiled with prefetch_distance=0 (${schedule:-?}), but issues $all prefetches"
      failures=$((failures + 1))
    fi
  elif [ "$wanted" -eq 0 ] || [ "$others" -ne 0 ]; then
    echo "FAIL $kernel: $wanted prefetches with the $hint hint, $others with another"
    failures=$((failures + 1))
  fi
  if [ -z "$shown" ] && [ "$distance" != "prefetch_distance=0" ] &&
     [[ $kernel == embag_forward_sum_f32_i64_* ]]; then
    shown=$kernel
    echo "$kernel, its first prefetches as emitted:"
    grep -E "$any_prefetch" <<< "$body" | head -4
  fi
done
if [ "$checked" -eq 0 ]; then
  echo "FAIL: no CPU forward kernel found in $archive"
  exit 1
fi
echo "$checked CPU forward kernels checked: those compiled with prefetch_distance=0 (the" \
     "cache-resident defaults) issue no prefetch, the others prefetch with $hint only; $failures failed"
[ "$failures" -eq 0 ]
