#!/usr/bin/env python3
"""make bench-report: embag, the hand-written gather loop, PyTorch and FBGEMM's TBE, side by side.

Runs bench_forward and bench_backward (built with EMBAG_BENCH_TORCH_DIR, so the peers' rows are
in the same process, on the same memory, timed the same way) on the shapes of --shapes, takes the
median of the repetitions, and writes into --out/<cpu kind>/ (e.g. bench/results/amd-avx2/; one
folder per CPU vendor and vector ISA, so the last report of each kind stays beside the others):
  REPORT.md             the CPU (model name, caches), date, commit and command; tables of GB/s
                        and the ratios (embag / loop, embag / PyTorch, embag / TBE, embag / the
                        best peer, embag / the machine's sequential read)
  forward_ratios.png    per forward row: embag / loop and embag / the best peer, against 1.0
  backward_ratios.png   the same for backward and the training step (embag / loop, / PyTorch)
  shapes.txt            the shape file the benchmarks ran (rows resolved, see below)
  forward.json, forward_huge_pages.json, backward.json, quantized.json   Google Benchmark's raw
                        output
The quantized section (bench_forward --quantized on --quantized-shapes,
bench/shapes/report-quantized.txt) puts embag's int8 / int4 forward beside PyTorch's quantized
ops and FBGEMM's inference TBE on the same bytes, in rows/s and GB/s of the bytes read, with the
issue-19 targets: every row >= 1.2x the faster peer, and int4 cold >= 2x embag's float32 cold on
the same indices (about 2 minutes on 2 cores).
With --readme it also puts a summary of the report (CPU, date, commit, command, a link, the forward
ratio plot) into that file between the markers of its CPU kind (`<!-- bench-report <kind>:
begin -->` ... `end -->`), adding them after the last such section if they are not there yet: the
README keeps the last report of every CPU kind it was run on.

Table rows sized from this CPU's caches: in the shape file the rows field may be `<k>xL3` (the
smallest row count whose float32 table is at least k times the L3 cache), besides a plain number.
The L3 size comes from sysfs (/sys/devices/system/cpu/cpu0/cache), then `getconf`; it is passed to
the benchmarks as --llc_mib, so "cold" (table over half the L3) and "warm" follow the same cache.
Backward and the huge-pages forward run on the uniform shapes only, and every repetition lasts at
least --min-time (0.2 s): the whole report takes ~15 minutes on 2 cores. The table-batched rows
(bench/tbe_batched_bench.py, on the Python package the build stages) add about a minute, the
TorchRec rows (bench/torchrec_bench.py: 2 processes, embag's TorchRec kernel against FBGEMM's on
the same sharding plan) about one (62 s quiet).

Run with .venv-torch's Python (matplotlib). Times depend on the machine and its load: read the
ratios of one run, not absolute numbers across runs.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SYSFS_CACHE = "/sys/devices/system/cpu/cpu0/cache"
# Past this share of the machine's available memory a cold table is capped (and the report says
# so): a table the machine cannot hold measures swapping, not gathering.
MEMORY_SHARE_CAP = 0.25


# ---- The machine ----------------------------------------------------------------------------

def parse_size(text):
    """'32768K' / '512 KiB' / '32 MiB' -> bytes."""
    m = re.match(r"\s*([\d.]+)\s*([KMG]?)(i?B)?\s*$", text.strip(), re.I)
    if not m:
        return None
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def read_caches():
    """{'l1d': bytes, 'l2': bytes, 'l3': bytes} of one core (0 where unknown), and the source."""
    caches = {"l1d": 0, "l2": 0, "l3": 0}
    source = "none"
    try:
        for entry in sorted(os.listdir(SYSFS_CACHE)):
            if not entry.startswith("index"):
                continue
            d = os.path.join(SYSFS_CACHE, entry)
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(d, "size")) as f:
                size = parse_size(f.read()) or 0
            key = {1: "l1d" if kind == "Data" else None, 2: "l2", 3: "l3"}.get(level)
            if key:
                caches[key] = size
                source = "sysfs"
    except OSError:
        pass
    if not caches["l3"]:
        for key, name in (("l1d", "LEVEL1_DCACHE_SIZE"), ("l2", "LEVEL2_CACHE_SIZE"),
                          ("l3", "LEVEL3_CACHE_SIZE")):
            try:
                value = int(subprocess.run(["getconf", name], capture_output=True, text=True)
                            .stdout.strip() or 0)
            except (OSError, ValueError):
                value = 0
            if value > 0 and not caches[key]:
                caches[key] = value
                source = "getconf"
    return caches, source


def lscpu():
    """lscpu's fields as a dict ('Model name', 'L3 cache', ...); empty without lscpu."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True,
                             env={**os.environ, "LC_ALL": "C"}).stdout
    except OSError:
        return {}
    fields = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    return fields


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_kind(cpu):
    """'amd-avx2', 'intel-avx512', 'arm-neon', ...: the folder and README section of a report."""
    vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(cpu.get("Vendor ID", ""))
    machine = platform.machine()
    if vendor is None:
        vendor = "arm" if machine in ("aarch64", "arm64") or machine.startswith("arm") else \
            re.sub(r"[^a-z0-9]+", "", cpu.get("Vendor ID", machine).lower()) or "cpu"
    flags = cpu_flags()
    if "avx512f" in flags:
        isa = "avx512"
    elif "avx2" in flags:
        isa = "avx2"
    elif machine in ("aarch64", "arm64"):
        isa = "neon"
    else:
        isa = machine
    return f"{vendor}-{isa}"


def available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def loop_prefetches(build):
    """'prefetcht0 x 483, prefetchnta x 0, ...' over the gather loop's objects (objdump), so the
    report shows the hint the loop was compiled with rather than what its source meant."""
    counts = {}
    objects = []
    for root, _, files in os.walk(os.path.join(build, "bench")):
        objects += [os.path.join(root, f) for f in files
                    if f.startswith("gather_") and f.endswith(".o")]
    for obj in objects:
        try:
            text = subprocess.run(["objdump", "-d", obj], capture_output=True, text=True).stdout
        except OSError:
            return "not checked (no objdump)"
        for m in re.finditer(r"\t(prefetch\w*)\s", text):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    if not objects:
        return "not checked (no gather_*.o in the build)"
    for hint in ("prefetcht0", "prefetchnta"):
        counts.setdefault(hint, 0)
    return ", ".join(f"`{k}` x {v}" for k, v in sorted(counts.items()))


def tbe_module_check():
    """The line bench/tbe_module_check.py gives for the report: the module against the operator
    the fbgemm_tbe rows time (same output? how much slower?)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tbe_module_check.py")
    run = subprocess.run([sys.executable, script, "--threads", "1"], capture_output=True,
                         text=True)
    try:
        r = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return "not checked (`bench/tbe_module_check.py` failed: " + \
            (run.stderr.strip().splitlines() or ["?"])[-1] + ")"
    parts = [f"{mode}: module {m['module_us']:.0f} us, operator {m['operator_us']:.0f} us per "
             f"call ({m['module_over_operator']:.2f}x), "
             f"{'bitwise the same output' if m['bitwise_equal'] else 'DIFFERENT OUTPUTS'}"
             for mode, m in r["modes"].items()]
    return (f"the module itself, from Python under `no_grad` ({r['shape']}, 1 thread, "
            f"`bench/tbe_module_check.py`), against the operator with its buffers: "
            + "; ".join(parts))


def batched_rows(build, threads=(1, 2)):
    """The table-batched section: bench/tbe_batched_bench.py (embag's TableBatchedEmbeddingBags,
    FBGEMM's CPU TBE module and a PyTorch loop on a DLRM-like batch, forward and a row-wise
    Adagrad training step) on the Python package staged in <build>/python. Returns the report's
    lines (a note saying why, when it could not run)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tbe_batched_bench.py")
    env = bench_env()
    package = os.path.join(os.path.abspath(build), "python")
    env["PYTHONPATH"] = package + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, script, "--threads", *map(str, threads)]
    print("+", " ".join(cmd), flush=True)
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    head = ["", "## Table-batched embedding bags (DLRM-like batch)", ""]
    try:
        r = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return head + ["Not measured: `bench/tbe_batched_bench.py` failed: " +
                       ((run.stderr.strip().splitlines() or ["?"])[-1])]
    lines = head + [
        f"`bench/tbe_batched_bench.py` (its docstring has the method), {r['batch']}, "
        f"{r['table_mib']} MiB of float32 tables; embag `TableBatchedEmbeddingBags` "
        f"({r['embag_isa']}), FBGEMM's `SplitTableBatchedEmbeddingBagsCodegen` (fbgemm-gpu-cpu "
        f"{r['fbgemm_gpu']}, HOST / CPU), and a loop of `F.embedding_bag` per table with "
        f"`torch.optim.Adagrad` over sparse gradients (torch {r['torch']}); the modules called "
        f"from Python as their users call them, interleaved, median of "
        f"{r['forward_repetitions']} (forward) and {r['repetitions']} (training step) "
        f"repetitions ({r['seconds']} s in all). Targets (issue 20): forward >= 1.2x TBE, "
        f"training step >= 1.5x TBE and >= 3x the loop.", "",
        "| row | threads | embag ms | TBE ms | loop ms | TBE / embag | loop / embag | targets |",
        "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        ms = row["ms"]
        if row["row"] == "forward":
            met = "met" if row["tbe_over_embag"] >= 1.2 else "NOT met (1.2x TBE)"
        else:
            missed = [t for t, ok in (("1.5x TBE", row["tbe_over_embag"] >= 1.5),
                                      ("3x loop", row["loop_over_embag"] >= 3)) if not ok]
            met = "met" if not missed else "NOT met (" + ", ".join(missed) + ")"
        lines.append(f"| {row['row']} | {row['threads']} | {ms['embag']:.1f} | {ms['TBE']:.1f} | "
                     f"{ms['loop']:.1f} | {row['tbe_over_embag']:.2f} | "
                     f"{row['loop_over_embag']:.2f} | {met} |")
    return lines


def torchrec_rows(build):
    """The TorchRec section: bench/torchrec_bench.py (training steps of a DLRM-like collection on
    2 processes, embag's kernel against TorchRec's FBGEMM kernels on the same plan) on the Python
    package staged in <build>/python. Returns the report's lines (a note saying why, when it
    could not run)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torchrec_bench.py")
    env = bench_env()
    package = os.path.join(os.path.abspath(build), "python")
    env["PYTHONPATH"] = package + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, script]
    print("+", " ".join(cmd), flush=True)
    load_before = loadavg()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    head = ["", "## TorchRec: sharded training steps (DLRM-like collection, 2 processes)", ""]
    try:
        r = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return head + ["Not measured: `bench/torchrec_bench.py` failed: " +
                       ((run.stderr.strip().splitlines() or ["?"])[-1])]
    lines = head + [
        f"`bench/torchrec_bench.py` (its docstring has the method): {r['collection']}, "
        f"{r['table_mib']} MiB of float32 tables, table-wise on {r['world']} processes (gloo over "
        f"127.0.0.1, 1 thread each), one `DistributedModelParallel` per kernel on the same plan; "
        f"embag.torchrec ({r['embag_isa']}) against TorchRec {r['torchrec']}'s `fused` / `dense` "
        f"kernels (fbgemm-gpu-cpu {r['fbgemm_gpu']}, torch {r['torch']}); a step is forward with "
        f"TorchRec's all-to-alls, backward and the optimizer; rank 0's median of "
        f"{r['repetitions']} interleaved steps ({r['seconds']} s in all; load average "
        f"{load_before} before it). Target (issue 21): >= 1.3x FBGEMM's steps per second. "
        f"embag's job-wide error agreement (one all-reduce per forward) took "
        f"{r['agreement_us']:.0f} us, inside embag's step times below.", "",
        "| row | embag steps/s | FBGEMM steps/s | embag ms | FBGEMM ms | FBGEMM / embag | target |",
        "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        ms, sps = row["ms"], row["steps_per_s"]
        met = "met" if row["fbgemm_over_embag"] >= 1.3 else "NOT met (1.3x)"
        lines.append(f"| {row['row']} | {sps['embag']:.2f} | {sps['FBGEMM']:.2f} | "
                     f"{ms['embag']:.1f} | {ms['FBGEMM']:.1f} | {row['fbgemm_over_embag']:.2f} | "
                     f"{met} |")
    return lines


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " / ".join(f.read().split()[:3])
    except OSError:
        return "?"


def mib(n):
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"


# ---- Shapes ---------------------------------------------------------------------------------

def shape_lines(path):
    """The shape lines of a shape file (comments and blank lines dropped)."""
    with open(path) as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


DTYPE_BYTES = {"f32": 4, "f64": 8, "f16": 2, "bf16": 2}


def resolve_shapes(path, l3_bytes, notes):
    """The shape lines with every `<k>xL3` rows field turned into a row count."""
    out = []
    memory = available_memory()
    for line in shape_lines(path):
        fields = [f.strip() for f in line.split(",")]
        m = re.fullmatch(r"([\d.]+)\s*[xX]\s*L3", fields[0])
        if m:
            if not l3_bytes:
                sys.exit(f"bench-report: {path}: '{fields[0]}' needs the L3 size, and neither "
                         "sysfs nor getconf reports one")
            dim = int(fields[1])
            element = DTYPE_BYTES.get(fields[5] if len(fields) > 5 else "f32", 4)
            want = float(m.group(1)) * l3_bytes
            rows = math.ceil(want / (dim * element))
            if memory and rows * dim * element > MEMORY_SHARE_CAP * memory:
                rows = int(MEMORY_SHARE_CAP * memory) // (dim * element)
                notes.append(f"`{line}`: capped at {rows:,} rows ({mib(rows * dim * element)}), "
                             f"{MEMORY_SHARE_CAP:.0%} of the available memory")
            fields[0] = str(rows)
        out.append(",".join(fields))
    return out


# ---- Running --------------------------------------------------------------------------------

def run_bench(binary, shapes, repetitions, out_json, extra_filter=None, flags=()):
    """Runs `binary` once per shape and merges the results into out_json. Rows are not randomly
    interleaved: the benchmarks rebuild their table whenever the shape changes, and with several
    thread pools in one process (embag's, the loop's, PyTorch's OpenMP) interleaved rows left the
    loop's two-thread rows at its one-thread speed (seen 2026-11-30, not understood)."""
    merged = {"context": {}, "benchmarks": []}
    for k, line in enumerate(shapes):
        one = f"{out_json}.shape{k}.txt"
        with open(one, "w") as f:
            f.write(line + "\n")
        data = run_bench_once(binary, one, repetitions, f"{out_json}.shape{k}.json",
                              extra_filter if k == 0 else _skip_memory(extra_filter), flags)
        os.remove(one)
        if os.path.exists(f"{out_json}.shape{k}.json"):
            os.remove(f"{out_json}.shape{k}.json")
        merged["context"] = merged["context"] or data["context"]
        merged["benchmarks"] += data["benchmarks"]
    with open(out_json, "w") as f:
        json.dump(merged, f, indent=1)
    return merged


def _skip_memory(extra_filter):
    """The sequential-read rows are measured with the first shape only."""
    return "-memory/" if not extra_filter else extra_filter + "|memory/"


def bench_env():
    """The benchmarks' environment: OMP_WAIT_POLICY=passive unless the caller set one. PyTorch's
    and TBE's kernels run on OpenMP threads; with libgomp's default (spin, then sleep) PyTorch's
    2-thread embedding_bag rows ran 4-15x slower than with passive on a shared 2-core machine
    (2026-12-03), the waiting worker burning the core the other needed. embag and the loop use
    their own pools, which this does not touch."""
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "passive")
    return env


def run_bench_once(binary, shapes, repetitions, out_json, extra_filter=None, flags=()):
    cmd = [binary, f"--shapes={shapes}", *flags, f"--benchmark_repetitions={repetitions}",
           "--benchmark_report_aggregates_only=true", f"--benchmark_out={out_json}",
           "--benchmark_out_format=json"]
    if extra_filter:
        cmd.append(f"--benchmark_filter={extra_filter}")
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=bench_env())
    # (a filter that matches no row of this shape -- warm shapes in the huge-pages run -- leaves
    # no output)
    if not os.path.exists(out_json) or os.path.getsize(out_json) == 0:
        return {"context": {}, "benchmarks": []}
    with open(out_json) as f:
        return json.load(f)


def medians(data):
    """run name (without /real_time) -> GB/s of the median aggregate (of the single run, where
    there was one repetition and so no aggregate)."""
    rows, single = {}, {}
    for b in data["benchmarks"]:
        if "GB/s" not in b:
            continue
        name = b["run_name"].replace("/real_time", "")
        if b.get("aggregate_name") == "median":
            rows[name] = b["GB/s"]
        elif b.get("run_type") == "iteration":
            single[name] = b["GB/s"]
    return {**single, **rows}


def counter_medians(data, counter):
    """run name -> `counter` of the median aggregate (or of the single run)."""
    rows, single = {}, {}
    for b in data["benchmarks"]:
        if counter not in b:
            continue
        name = b["run_name"].replace("/real_time", "")
        if b.get("aggregate_name") == "median":
            rows[name] = b[counter]
        elif b.get("run_type") == "iteration":
            single[name] = b[counter]
    return {**single, **rows}


def quantized_section(data):
    """REPORT.md's lines for bench_forward --quantized's rows: per shape, bits and threads, the
    rows/s and GB/s of embag, PyTorch's quantized op and TBE's inference operator, embag over the
    faster peer (target 1.2), and for int4 embag over embag's own float32 sum (target 2 when
    cold)."""
    rps, gbps = counter_medians(data, "rows/s"), counter_medians(data, "GB/s")
    table = {}
    for name, value in rps.items():
        impl, mode, shape, threads = split(name)
        table.setdefault((shape, threads), {})[(impl, mode)] = (value, gbps.get(name))
    lines = ["", "## Quantized tables, forward sum (rows/s)", "",
             "`bench_forward --quantized` on `bench/shapes/report-quantized.txt`: embag on "
             "PyTorch's prepack layout (`int8`, `int4`), PyTorch's "
             "`quantized::embedding_bag_byte_rowwise_offsets` / `_4bit_rowwise_offsets` on the "
             "same bytes, FBGEMM's inference TBE (`int_nbit_split_embedding_codegen_lookup_function`, "
             "the CPU operator of `IntNBitTableBatchedEmbeddingBagsCodegen`) on the table in its "
             "layout, and embag's float32 sum on the float table they were quantized from; same "
             "indices for all. `fp8` is embag on the table as `float8_e4m3fn` (no peer: PyTorch "
             "has no float8 embedding_bag). GB/s counts the bytes actually read (row bytes and index per "
             "position, offsets) and the float32 output. Targets (issue 19): embag / best peer "
             ">= 1.2; int4 cold: embag int4 / embag float32 >= 2.", "",
             "| shape | bits | threads | embag Mrows/s | PyTorch | TBE | embag GB/s | "
             "embag / PyTorch | embag / TBE | embag / best peer | embag / embag f32 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    def m(x):
        return "-" if x is None else f"{x / 1e6:.1f}"
    for (shape, threads), v in sorted(table.items(), key=lambda kv: (shape_key(kv[0][0]),
                                                                     kv[0][1])):
        f32 = v.get(("embag", "sum_f32"), (None, None))[0]
        for bits in ("int8", "int4", "fp8"):
            e, e_gb = v.get(("embag", f"sum_{bits}"), (None, None))
            pt = v.get(("pytorch", f"sum_{bits}"), (None, None))[0]
            tbe = v.get(("fbgemm_tbe", f"sum_{bits}"), (None, None))[0]
            best = max([p for p in (pt, tbe) if p is not None], default=None)
            lines.append(f"| {shape} | {bits} | {threads} | {m(e)} | {m(pt)} | {m(tbe)} | "
                         f"{fmt(e_gb)} | {fmt(ratio(e, pt))} | {fmt(ratio(e, tbe))} | "
                         f"{fmt(ratio(e, best))} | {fmt(ratio(e, f32))} |")
    return lines


def labels(data):
    """run name -> the row's label (the kernel variant that ran)."""
    return {b["run_name"].replace("/real_time", ""): b.get("label", "")
            for b in data["benchmarks"] if b.get("label")}


SHAPE_RE = re.compile(r"rows:(\d+)/dim:(\d+)/bags:(\d+)/pool:(\d+)/(\w+)/(cold|warm)/threads:(\d+)")


def split(name):
    """'embag/sum/rows:.../threads:1' -> ('embag', 'sum', shape text, threads)."""
    m = SHAPE_RE.search(name)
    head = name[: m.start()].strip("/")
    parts = head.split("/")
    rows, dim, bags, pool, dist, temp, threads = m.groups()
    shape = f"{int(rows):,} x {dim} {temp} {dist}"
    mode = "/".join(p for p in parts[1:] if not p.startswith("dtype:"))
    dtype = [p[len("dtype:"):] for p in parts[1:] if p.startswith("dtype:")]
    if dtype:  # a table of another dtype: 'sum (float16)', against the loop of that dtype
        mode = f"{mode} ({dtype[0]})"
    return parts[0], mode, shape, int(threads)


def shape_key(shape):
    """Sort order: warm before cold, then D, then rows, then the distribution."""
    rows, _, dim, temp, dist = shape.split(" ")
    return (temp != "warm", int(dim), int(rows.replace(",", "")), dist)


def short_variant(name):
    """'embag_forward_sum_f32_i64_cache_avx2' -> 'sum_f32_i64_cache_avx2'."""
    return name.replace("embag_forward_", "")


def fmt(x):
    return "-" if x is None else f"{x:.2f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


# ---- Plots ----------------------------------------------------------------------------------

MODE_ORDER = {"sum": 0, "mean": 1, "max": 2, "max with argmax": 3, "sum (float16)": 4,
              "sum (bfloat16)": 5, "sum (float64)": 6}
FORM_ORDER = {"dense": 0, "sparse": 1, "train_dense": 2, "train_sparse": 3}


def ratio_bars(path, title, panels, series, values, note, columns=4):
    """One panel per mode: for each row (shape, threads) a bar per series drawn from 1.0 to its
    ratio on a log2 axis, so a bar to the right means embag leads and to the left that it
    trails; each bar carries its value. `panels` maps a panel title to its row labels; `values`
    maps (panel, row, series) to a ratio (None: no bar)."""
    rows_max = max(len(r) for r in panels.values())
    columns = min(columns, len(panels))
    grid_rows = math.ceil(len(panels) / columns)
    # Row labels only on the first column where every panel has the same rows.
    same_rows = len({tuple(r) for r in panels.values()}) == 1
    fig, axes = plt.subplots(grid_rows, columns,
                             figsize=(3.6 * columns + 2.2,
                                      grid_rows * (0.3 * rows_max * len(series) + 1.0) + 1.2),
                             squeeze=False)
    finite = [v for v in values.values() if v]
    lo = min(finite + [0.5]) / 1.3
    hi = max(finite + [2.0]) * 1.3
    ticks = [t for t in (1 / 16, 1 / 8, 0.25, 0.5, 1, 2, 4, 8, 16, 32) if lo <= t <= hi]
    bar = 0.8 / len(series)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    for n, (ax, (panel, rows)) in enumerate(zip(flat, panels.items())):
        for k, name in enumerate(series):
            ys = [i + (k - (len(series) - 1) / 2) * bar for i in range(len(rows))]
            xs = [values.get((panel, r, name)) for r in rows]
            ax.barh([y for y, x in zip(ys, xs) if x], [x - 1 for x in xs if x], bar, left=1,
                    label=name, color=colors[k % 4])
            for y, x in zip(ys, xs):
                if x:
                    ax.text(x * (1.04 if x >= 1 else 1 / 1.04), y, f"{x:.2f}", va="center",
                            ha="left" if x >= 1 else "right", fontsize=6)
        ax.set_xscale("log", base=2)
        ax.set_xlim(lo, hi)
        ax.axvline(1.0, color="black", linewidth=1.2)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows if n % columns == 0 or not same_rows else [], fontsize=7)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" if t >= 1 else f"1/{round(1 / t)}" for t in ticks])
        ax.set_title(panel, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    handles, names = flat[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="upper right")
    fig.suptitle(title + "\n(log scale; right of 1.0: embag faster, left of it: embag slower)",
                 fontsize=9)
    fig.text(0.01, 0.005, note, fontsize=6)
    fig.tight_layout(rect=(0, 0.02, 0.9 if grid_rows == 1 else 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- README ---------------------------------------------------------------------------------

def update_readme(readme, kind, lines, folder):
    """Puts a summary of the report (the CPU, caches, date, commit, command and load, a link to
    REPORT.md and the forward ratio plot) between README's markers for `kind`, adding them after
    the last such section if they are not there yet: the README keeps the last report of every
    CPU kind it was run on, the tables stay in REPORT.md."""
    with open(readme) as f:
        text = f.read()
    begin, end = f"<!-- bench-report {kind}: begin -->", f"<!-- bench-report {kind}: end -->"
    keep = ("- CPU:", "- Caches", "- Date:", "- Command:", "- Load average")
    body = [line for line in lines if line.startswith(keep)]
    body += [f"- Every table: [{folder}/REPORT.md]({folder}/REPORT.md)", "",
             f"![forward: embag / loop and embag / best peer]({folder}/forward_ratios.png)"]
    block = "\n".join([begin, *body, end])
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        last = list(re.finditer(r"<!-- bench-report [\w-]+: end -->", text))
        if not last:
            print(f"bench-report: no bench-report section in {readme}; not updated")
            return
        at = last[-1].end()
        text = text[:at] + f"\n\n#### {kind}\n\n" + block + text[at:]
    with open(readme, "w") as f:
        f.write(text)
    print(f"bench-report: updated {readme} ({kind})")


# ---- Main -----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="build directory with bench/bench_*")
    ap.add_argument("--shapes", default="bench/shapes/report.txt")
    ap.add_argument("--out", default="bench/results", help="the report goes to OUT/<cpu kind>")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--command", default="make bench-report", help="recorded in the report")
    ap.add_argument("--readme", help="README to put the report into (its CPU kind's section)")
    ap.add_argument("--no-backward", action="store_true", help="forward rows only")
    ap.add_argument("--quantized-shapes", default="bench/shapes/report-quantized.txt",
                    help="shapes of the quantized-table rows (bench_forward --quantized); "
                    "'none' skips them")
    ap.add_argument("--no-batched", action="store_true",
                    help="skip the table-batched rows (bench/tbe_batched_bench.py)")
    ap.add_argument("--no-torchrec", action="store_true",
                    help="skip the TorchRec rows (bench/torchrec_bench.py)")
    ap.add_argument("--min-time", default="0.2",
                    help="Google Benchmark's --benchmark_min_time, seconds per repetition (0.2: "
                    "the whole report in ~15 minutes on 2 cores; a smaller value for a quick "
                    "check of the report)")
    args = ap.parse_args()

    cpu = lscpu()
    caches, cache_source = read_caches()
    kind = cpu_kind(cpu)
    out = os.path.join(args.out, kind)
    os.makedirs(out, exist_ok=True)
    notes = []
    shapes = resolve_shapes(args.shapes, caches["l3"], notes)
    with open(os.path.join(out, "shapes.txt"), "w") as f:
        f.write(f"# {args.shapes} as make bench-report ran it here (L3 {mib(caches['l3'])})\n")
        f.write("\n".join(shapes) + "\n")
    llc_mib = max(1, caches["l3"] >> 20) if caches["l3"] else 32
    llc_flag = f"--llc_mib={llc_mib}"
    bench_flags = (llc_flag, f"--benchmark_min_time={args.min_time}")

    load_before = loadavg()
    fwd_bin = os.path.join(args.build, "bench/bench_forward")
    fwd_data = run_bench(fwd_bin, shapes, args.repetitions, os.path.join(out, "forward.json"),
                         "-reference", flags=bench_flags)
    # The same forward rows with every table on transparent huge pages (--huge_pages: embag's
    # advise_huge_pages, for every row alike), cold uniform shapes only (for the run time).
    # Tables of other dtypes (a sixth field) run in the forward table only, sum against the loop
    # of their dtype; the huge-pages and backward runs take the float32 uniform shapes.
    float32_uniform = [s for s in shapes if s.split(",")[4].strip() == "uniform"
                       and (s.split(",") + ["f32"])[5].strip() == "f32"]
    thp_data = run_bench(fwd_bin, float32_uniform,
                         args.repetitions,
                         os.path.join(out, "forward_huge_pages.json"), "-reference|warm",
                         flags=bench_flags + ("--huge_pages",))
    bwd_data = {"context": {}, "benchmarks": []}
    if not args.no_backward:
        bwd_data = run_bench(os.path.join(args.build, "bench/bench_backward"), float32_uniform,
                             args.repetitions, os.path.join(out, "backward.json"),
                             flags=bench_flags)
    quant_data = {"context": {}, "benchmarks": []}
    if args.quantized_shapes != "none":
        quant_data = run_bench(fwd_bin, shape_lines(args.quantized_shapes), args.repetitions,
                               os.path.join(out, "quantized.json"), "-memory/",
                               flags=bench_flags + ("--quantized",))
    batched = [] if args.no_batched else batched_rows(args.build)
    sharded = [] if args.no_torchrec else torchrec_rows(args.build)
    load_after = loadavg()
    fwd, bwd, thp = medians(fwd_data), medians(bwd_data), medians(thp_data)
    fwd_labels = labels(fwd_data)
    if not any(k.startswith("pytorch/") for k in fwd):
        sys.exit("bench-report: no pytorch rows: configure the build with EMBAG_BENCH_TORCH_DIR")
    context = fwd_data["context"]
    seq = {t: fwd.get(f"memory/sequential_read/threads:{t}") for t in (1, 2)}

    # ---- forward table ------------------------------------------------------------------
    table = {}  # (shape, mode, threads) -> {impl: GB/s}
    variants = {}  # (shape, mode, threads) -> embag's variant
    for name, gbps in fwd.items():
        if name.startswith("memory/"):
            continue
        impl, mode, shape, threads = split(name)
        if impl == "embag" and mode == "max_argmax":
            impl, mode = "embag_argmax", "max"
        elif impl == "embag":
            variants[(shape, mode, threads)] = fwd_labels.get(name, "")
        table.setdefault((shape, mode, threads), {})[impl] = gbps
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    model = cpu.get("Model name", platform.processor() or "unknown")
    lscpu_caches = ", ".join(f"{k} {cpu[k]}" for k in ("L1d cache", "L2 cache", "L3 cache")
                             if k in cpu)
    has_tbe = any(k.startswith("fbgemm_tbe/") for k in fwd)
    lines = [
        f"# embag benchmark report: {model} ({kind})", "",
        f"- CPU: {model} (`lscpu`: vendor {cpu.get('Vendor ID', '?')}, family "
        f"{cpu.get('CPU family', '?')}, model {cpu.get('Model', '?')}; {os.cpu_count()} logical "
        f"CPUs, {context.get('mhz_per_cpu', '?')} MHz)",
        f"- Caches per core ({cache_source}): L1d {mib(caches['l1d'])}, L2 {mib(caches['l2'])}, "
        f"L3 {mib(caches['l3'])} (lscpu, all instances: {lscpu_caches or '?'})",
        f"- Date: {now}; commit {commit}{' (with local changes)' if dirty else ''}",
        f"- Command: `{args.command}` (shapes `{args.shapes}`, resolved in `shapes.txt`; median "
        f"of {args.repetitions} repetitions of at least {args.min_time} s, each shape in a run "
        f"of its own)",
        f"- Shapes: float32 table (other dtypes where the mode says so) 64-byte aligned, int64 indices, B+1 offsets; warm tables fit "
        f"in half the L3 (one index batch), cold ones do not and cycle 8 index batches drawn "
        f"over the whole table; `<k>xL3` rows in the shape file are k times the "
        f"{mib(caches['l3'])} L3 read here",
        f"- Load average (1 / 5 / 15 min) before the run: {load_before}; after: {{load_after}} "
        f"(a busy machine slows the multi-threaded rows most: a descheduled thread stalls a "
        f"parallel region)",
        f"- The loop: the hand-written gather loop (`bench/gather_*.cpp`, "
        f"{context.get('baseline_isa', '?')}): compile-time D, accumulators in registers, "
        f"`_mm_prefetch(..., _MM_HINT_T0)` (`prefetcht0`, as FBGEMM's JIT emits) of every line "
        f"of the row 16 positions ahead; the machine's limit (its objects, by objdump: "
        f"{loop_prefetches(args.build)})",
        f"- PyTorch: {context.get('pytorch', '?')}: `F.embedding_bag` under inference mode; "
        f"PyTorch's and TBE's OpenMP threads with `OMP_WAIT_POLICY={bench_env()['OMP_WAIT_POLICY']}`"
        f" (libgomp's default spinning made PyTorch's 2-thread rows 4-15x slower on a shared "
        f"2-core machine)",
        f"- TBE: " + (f"fbgemm-gpu-cpu {context.get('fbgemm_tbe', '?')}: "
                      "`SplitTableBatchedEmbeddingBagsCodegen`'s CPU forward operator "
                      "(`fbgemm::split_embedding_codegen_forward_cpu`, what the module runs for "
                      "one HOST table, SUM or MEAN pooling; it has no max) through the c10 "
                      "dispatcher, in the same process on the same memory; "
                      + tbe_module_check()
                      if has_tbe else "not measured (no fbgemm_gpu beside this build's torch)"),
        f"- Sequential read: {fmt(seq[1])} GB/s on 1 thread, {fmt(seq[2])} GB/s on 2",
        "- Every peer row is checked before timing: embag and the loop bitwise, PyTorch and TBE "
        "within 1e-5 relative of the loop",
    ]
    lines += [f"- Note: {n}" for n in notes]
    lines += [
        "", "## Forward (GB/s)", "",
        "Best peer: the faster of PyTorch and TBE on that row. Ratios above 1: embag faster.", "",
        "| shape | mode | threads | embag | loop | PyTorch | TBE | embag / loop | "
        "embag / PyTorch | embag / TBE | embag / best peer | embag / seq. read | embag variant |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fwd_plot = {}
    for (shape, mode, threads), v in sorted(
            table.items(), key=lambda kv: (shape_key(kv[0][0]), MODE_ORDER.get(kv[0][1], 9),
                                           kv[0][2])):
        loop, pt, tbe = v.get("baseline"), v.get("pytorch"), v.get("fbgemm_tbe")
        best = max([p for p in (pt, tbe) if p is not None], default=None)
        rows = [(mode, v.get("embag"))]
        if "embag_argmax" in v:
            rows.append(("max with argmax", v["embag_argmax"]))
        for label, e in rows:
            lines.append(
                f"| {shape} | {label} | {threads} | {fmt(e)} | {fmt(loop)} | {fmt(pt)} | "
                f"{fmt(tbe)} | {fmt(ratio(e, loop))} | {fmt(ratio(e, pt))} | "
                f"{fmt(ratio(e, tbe))} | {fmt(ratio(e, best))} | "
                f"{fmt(ratio(e, seq.get(threads)))} | "
                f"{short_variant(variants.get((shape, mode, threads), '')) if label == mode else ''} |")
            row = f"{shape}, t{threads}"
            fwd_plot[(label, row, "embag / loop")] = ratio(e, loop)
            fwd_plot[(label, row, "embag / best peer")] = ratio(e, best)

    # ---- forward on huge pages -----------------------------------------------------------
    thp_seq = {t: thp.get(f"memory/sequential_read/threads:{t}") for t in (1, 2)}
    lines += ["", "## Forward, tables on transparent huge pages (GB/s)", "",
              "`bench_forward --huge_pages`: every table 2 MiB-aligned and advised with "
              "`embag::advise_huge_pages` before it is filled, the same memory for all; cold uniform "
              "shapes. "
              f"Sequential read there: {fmt(thp_seq[1])} / {fmt(thp_seq[2])} GB/s (1 / 2 "
              "threads).", "",
              "| shape | mode | threads | embag | loop | PyTorch | TBE | embag / loop | "
              "embag / best peer | embag, huge / plain pages |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    thp_table = {}
    for name, gbps in thp.items():
        if name.startswith("memory/"):
            continue
        impl, mode, shape, threads = split(name)
        if impl == "embag" and mode == "max_argmax":
            impl, mode = "embag_argmax", "max"
        thp_table.setdefault((shape, mode, threads), {})[impl] = gbps
    for (shape, mode, threads), v in sorted(
            thp_table.items(), key=lambda kv: (shape_key(kv[0][0]), MODE_ORDER.get(kv[0][1], 9),
                                               kv[0][2])):
        e = v.get("embag")
        best = max([p for p in (v.get("pytorch"), v.get("fbgemm_tbe")) if p is not None],
                   default=None)
        plain = table.get((shape, mode, threads), {}).get("embag")
        lines.append(
            f"| {shape} | {mode} | {threads} | {fmt(e)} | {fmt(v.get('baseline'))} | "
            f"{fmt(v.get('pytorch'))} | {fmt(v.get('fbgemm_tbe'))} | "
            f"{fmt(ratio(e, v.get('baseline')))} | {fmt(ratio(e, best))} | "
            f"{fmt(ratio(e, plain))} |")

    # ---- backward table -----------------------------------------------------------------
    btable = {}
    for name, gbps in bwd.items():
        impl, rest, shape, threads = split(name)
        btable.setdefault((shape, rest, threads), {})[impl] = gbps
    # pytorch_style_dense rows are named pytorch_style_dense/<mode>/...: fold them into dense.
    for (shape, rest, threads), v in btable.items():
        if "pytorch_style_dense" in v and "/" not in rest:
            key = (shape, rest + "/dense", threads)
            if key in btable:
                btable[key]["pytorch_style_dense"] = v["pytorch_style_dense"]
    bwd_plot = {}
    if bwd:
        lines += ["", "## Backward and training step (GB/s)", "",
                  "Uniform shapes. `dense`: embag::backward into a (V, D) gradient; `sparse`: "
                  "sparse_gradient_rows + backward (embag) against PyTorch's sparse gradient + "
                  "`coalesce()`; `train_*`: forward + backward. The loop is the PyTorch-style "
                  "dense loop (fill, then add each position's row).", "",
                  "| shape | mode / form | threads | embag | loop | PyTorch | embag / loop | "
                  "embag / PyTorch |", "|---|---|---|---|---|---|---|---|"]
    def form_key(rest):
        mode, _, form = rest.partition("/")
        return (FORM_ORDER.get(form, 9), MODE_ORDER.get(mode, 9))

    for (shape, rest, threads), v in sorted(
            btable.items(), key=lambda kv: (shape_key(kv[0][0]), form_key(kv[0][1]), kv[0][2])):
        if "embag" not in v and "pytorch" not in v:
            continue
        e, loop, pt = v.get("embag"), v.get("pytorch_style_dense"), v.get("pytorch")
        lines.append(f"| {shape} | {rest} | {threads} | {fmt(e)} | {fmt(loop)} | {fmt(pt)} | "
                     f"{fmt(ratio(e, loop))} | {fmt(ratio(e, pt))} |")
        row = f"{shape}, t{threads}"
        bwd_plot[(rest, row, "embag / loop")] = ratio(e, loop)
        bwd_plot[(rest, row, "embag / PyTorch")] = ratio(e, pt)
    if quant_data["benchmarks"]:
        lines += quantized_section(quant_data)
    lines += batched
    lines += sharded
    lines += ["", "![forward: embag / loop and embag / best peer](forward_ratios.png)", ""]
    if bwd_plot:
        lines += ["![backward: embag / loop and embag / PyTorch](backward_ratios.png)", ""]
    lines = [line.replace("{load_after}", load_after) for line in lines]
    with open(os.path.join(out, "REPORT.md"), "w") as f:
        f.write("\n".join(lines))

    note = f"{model}, L3 {mib(caches['l3'])}; {now}; commit {commit}; `{args.command}`"
    def panels(plot, order):
        out = {}
        for panel, row, _ in plot:
            out.setdefault(panel, [])
            if row not in out[panel]:
                out[panel].append(row)
        return dict(sorted(out.items(), key=lambda kv: order(kv[0])))

    ratio_bars(os.path.join(out, "forward_ratios.png"),
               f"Forward: embag / loop and embag / best peer (PyTorch, TBE), {model} ({kind})",
               panels(fwd_plot, lambda m: MODE_ORDER.get(m, 9)),
               ["embag / loop", "embag / best peer"], fwd_plot, note)
    if bwd_plot:
        # Backward panels: the dense gradient (against the loop and PyTorch), the sparse one and
        # the training steps (against PyTorch), one panel per mode / form.
        ratio_bars(os.path.join(out, "backward_ratios.png"),
                   f"Backward and training step: embag / loop and embag / PyTorch, {model} "
                   f"({kind})",
                   panels(bwd_plot, lambda f: (FORM_ORDER.get(f.split("/")[-1], 9),
                                               MODE_ORDER.get(f.split("/")[0], 9))),
                   ["embag / loop", "embag / PyTorch"], bwd_plot, note, columns=5)
    if args.readme:
        update_readme(args.readme, kind, lines, os.path.relpath(out))
    print("\n".join(lines))
    print(f"\nbench-report: wrote {out}/REPORT.md and its plots")


if __name__ == "__main__":
    main()
