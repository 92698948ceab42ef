#!/usr/bin/env python3
"""make bench-report: embag, the hand-written gather loop and PyTorch 2.x, side by side.

Runs bench_forward and bench_backward (built with EMBAG_BENCH_TORCH_DIR, so PyTorch's rows are
in the same process, on the same memory, timed the same way) on bench/shapes/report.txt, takes
the median of the repetitions, and writes into --out:
  REPORT.md           tables of GB/s and the ratios (embag / loop, embag / PyTorch, embag /
                      the machine's sequential read), with the date, CPU, commit and command
  forward.png         GB/s per mode and shape: embag, the loop, PyTorch
  backward.png        the same for backward and the training step
  ratio_seqread.png   each forward row's GB/s over the measured sequential-read GB/s
  forward.json, backward.json   Google Benchmark's raw output
Run with .venv-bench's Python (matplotlib). Times depend on the machine and its load: read the
ratios of one run, not absolute numbers across runs.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def shape_lines(path):
    """The shape lines of a shape file (comments and blank lines dropped)."""
    with open(path) as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def run_bench(binary, shapes, repetitions, out_json, extra_filter=None, flags=()):
    """Runs `binary` once per shape and merges the results into out_json. Rows are not randomly
    interleaved: the benchmarks rebuild their table whenever the shape changes, and with three
    thread pools in one process (embag's, the loop's, PyTorch's OpenMP) interleaved rows left the
    loop's two-thread rows at its one-thread speed (seen 2026-11-30, not understood)."""
    merged = {"context": {}, "benchmarks": []}
    for k, line in enumerate(shape_lines(shapes)):
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


def run_bench_once(binary, shapes, repetitions, out_json, extra_filter=None, flags=()):
    cmd = [binary, f"--shapes={shapes}", *flags, f"--benchmark_repetitions={repetitions}",
           "--benchmark_report_aggregates_only=true", f"--benchmark_out={out_json}",
           "--benchmark_out_format=json"]
    if extra_filter:
        cmd.append(f"--benchmark_filter={extra_filter}")
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    # (a filter that matches no row of this shape -- warm shapes in the huge-pages run -- leaves
    # no output)
    if not os.path.exists(out_json) or os.path.getsize(out_json) == 0:
        return {"context": {}, "benchmarks": []}
    with open(out_json) as f:
        return json.load(f)


def medians(data):
    """run name (without /real_time) -> (GB/s, label) of the median aggregate."""
    rows = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "median" or "GB/s" not in b:
            continue
        rows[b["run_name"].replace("/real_time", "")] = b["GB/s"]
    return rows


SHAPE_RE = re.compile(r"rows:(\d+)/dim:(\d+)/bags:(\d+)/pool:(\d+)/(\w+)/(cold|warm)/threads:(\d+)")


def split(name):
    """'embag/sum/rows:.../threads:1' -> ('embag', 'sum', shape text, threads)."""
    m = SHAPE_RE.search(name)
    head = name[: m.start()].strip("/")
    parts = head.split("/")
    rows, dim, bags, pool, dist, temp, threads = m.groups()
    shape = f"{int(rows):,} x {dim} {temp}"
    return parts[0], "/".join(parts[1:]), shape, int(threads)


def fmt(x):
    return "-" if x is None else f"{x:.2f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def grouped_bars(path, title, groups, series, values, ylabel):
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(groups)), 4.8))
    width = 0.8 / len(series)
    for k, name in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ys = [values.get((g, name)) or 0 for g in groups]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="build directory with bench/bench_*")
    ap.add_argument("--shapes", default="bench/shapes/report.txt")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--command", default="make bench-report", help="recorded in the report")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    fwd_data = run_bench(os.path.join(args.build, "bench/bench_forward"), args.shapes,
                         args.repetitions, os.path.join(args.out, "forward.json"),
                         "-reference")
    # The same forward rows with every table on transparent huge pages (--huge_pages: embag's
    # advise_huge_pages, for embag, the loop and PyTorch alike), cold shapes only.
    thp_data = run_bench(os.path.join(args.build, "bench/bench_forward"), args.shapes,
                         args.repetitions, os.path.join(args.out, "forward_huge_pages.json"),
                         "-reference|warm", flags=("--huge_pages",))
    bwd_data = run_bench(os.path.join(args.build, "bench/bench_backward"), args.shapes,
                         args.repetitions, os.path.join(args.out, "backward.json"))
    fwd, bwd, thp = medians(fwd_data), medians(bwd_data), medians(thp_data)
    if not any(k.startswith("pytorch/") for k in fwd):
        sys.exit("bench-report: no pytorch rows: configure the build with EMBAG_BENCH_TORCH_DIR")
    context = fwd_data["context"]
    seq = {t: fwd.get(f"memory/sequential_read/threads:{t}") for t in (1, 2)}

    # ---- forward table ------------------------------------------------------------------
    table = {}  # (shape, mode, threads) -> {impl: GB/s}
    for name, gbps in fwd.items():
        if name.startswith("memory/"):
            continue
        impl, mode, shape, threads = split(name)
        if impl == "embag" and mode == "max_argmax":
            impl, mode = "embag_argmax", "max"
        table.setdefault((shape, mode, threads), {})[impl] = gbps
    lines = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lines += [
        "# embag benchmark report", "",
        f"- Date: {now}; commit {commit}",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs "
        f"(context: {context.get('num_cpus')} CPUs at {context.get('mhz_per_cpu')} MHz)",
        f"- PyTorch: {context.get('pytorch', '?')}; the loop: the hand-written gather loop "
        f"(`bench/gather_*.cpp`, {context.get('baseline_isa', '?')})",
        f"- Command: `{args.command}` (shapes `{args.shapes}`, median of {args.repetitions} "
        "repetitions, each shape in a run of its own; float32 table 64-byte aligned, int64 indices, 2048 bags of 40, cold "
        "shapes cycle 8 index batches)",
        f"- Sequential read: {fmt(seq[1])} GB/s on 1 thread, {fmt(seq[2])} GB/s on 2", "",
        "## Forward (GB/s)", "",
        "| shape | mode | threads | embag | loop | PyTorch | embag / loop | embag / PyTorch "
        "| embag / seq. read |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    fwd_plot = {}
    for (shape, mode, threads), v in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        e = v.get("embag")
        lines.append(
            f"| {shape} | {mode} | {threads} | {fmt(e)} | {fmt(v.get('baseline'))} | "
            f"{fmt(v.get('pytorch'))} | {fmt(ratio(e, v.get('baseline')))} | "
            f"{fmt(ratio(e, v.get('pytorch')))} | {fmt(ratio(e, seq.get(threads)))} |")
        if "embag_argmax" in v:
            ea = v["embag_argmax"]
            lines.append(
                f"| {shape} | max with argmax | {threads} | {fmt(ea)} | {fmt(v.get('baseline'))} | "
                f"{fmt(v.get('pytorch'))} | {fmt(ratio(ea, v.get('baseline')))} | "
                f"{fmt(ratio(ea, v.get('pytorch')))} | {fmt(ratio(ea, seq.get(threads)))} |")
        group = f"{mode} {shape} t{threads}"
        for impl, label in (("embag", "embag"), ("baseline", "loop"), ("pytorch", "PyTorch")):
            fwd_plot[(group, label)] = v.get(impl)
            fwd_plot[(group, label + " / seq. read")] = ratio(v.get(impl), seq.get(threads))

    # ---- forward on huge pages -----------------------------------------------------------
    thp_seq = {t: thp.get(f"memory/sequential_read/threads:{t}") for t in (1, 2)}
    lines += ["", "## Forward, tables on transparent huge pages (GB/s)", "",
              "`bench_forward --huge_pages`: every table 2 MiB-aligned and advised with "
              "`embag::advise_huge_pages` before it is filled, the same memory for all three. "
              f"Sequential read there: {fmt(thp_seq[1])} / {fmt(thp_seq[2])} GB/s (1 / 2 "
              "threads).", "",
              "| shape | mode | threads | embag | loop | PyTorch | embag / loop | "
              "embag / PyTorch | embag, huge / plain pages |",
              "|---|---|---|---|---|---|---|---|---|"]
    thp_table = {}
    for name, gbps in thp.items():
        if name.startswith("memory/"):
            continue
        impl, mode, shape, threads = split(name)
        if impl == "embag" and mode == "max_argmax":
            impl, mode = "embag_argmax", "max"
        thp_table.setdefault((shape, mode, threads), {})[impl] = gbps
    for (shape, mode, threads), v in sorted(thp_table.items()):
        e = v.get("embag")
        plain = table.get((shape, mode, threads), {}).get("embag")
        lines.append(
            f"| {shape} | {mode} | {threads} | {fmt(e)} | {fmt(v.get('baseline'))} | "
            f"{fmt(v.get('pytorch'))} | {fmt(ratio(e, v.get('baseline')))} | "
            f"{fmt(ratio(e, v.get('pytorch')))} | {fmt(ratio(e, plain))} |")

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
    lines += ["", "## Backward and training step (GB/s)", "",
              "`dense`: embag::backward into a (V, D) gradient; `sparse`: "
              "sparse_gradient_rows + backward (embag) against PyTorch's sparse gradient + "
              "`coalesce()`; `train_*`: forward + backward. The loop is the PyTorch-style dense "
              "loop (fill, then add each position's row).", "",
              "| shape | mode / form | threads | embag | loop | PyTorch | embag / loop | "
              "embag / PyTorch |", "|---|---|---|---|---|---|---|---|"]
    bwd_plot = {}
    for (shape, rest, threads), v in sorted(btable.items()):
        if "embag" not in v and "pytorch" not in v:
            continue
        e, loop, pt = v.get("embag"), v.get("pytorch_style_dense"), v.get("pytorch")
        lines.append(f"| {shape} | {rest} | {threads} | {fmt(e)} | {fmt(loop)} | {fmt(pt)} | "
                     f"{fmt(ratio(e, loop))} | {fmt(ratio(e, pt))} |")
        group = f"{rest} {shape} t{threads}"
        bwd_plot[(group, "embag")] = e
        bwd_plot[(group, "loop")] = loop
        bwd_plot[(group, "PyTorch")] = pt
    lines += ["", "![forward](forward.png)", "", "![backward](backward.png)", "",
              "![ratio to sequential read](ratio_seqread.png)", ""]
    with open(os.path.join(args.out, "REPORT.md"), "w") as f:
        f.write("\n".join(lines))

    groups = sorted({g for g, _ in fwd_plot})
    grouped_bars(os.path.join(args.out, "forward.png"), f"Forward GB/s ({cpu_model()}, {now})",
                 groups, ["embag", "loop", "PyTorch"], fwd_plot, "GB/s")
    grouped_bars(os.path.join(args.out, "ratio_seqread.png"),
                 "Forward GB/s / sequential-read GB/s (same thread count)", groups,
                 ["embag / seq. read", "loop / seq. read", "PyTorch / seq. read"], fwd_plot,
                 "fraction of sequential read")
    bgroups = sorted({g for g, _ in bwd_plot})
    grouped_bars(os.path.join(args.out, "backward.png"), f"Backward GB/s ({cpu_model()}, {now})",
                 bgroups, ["embag", "loop", "PyTorch"], bwd_plot, "GB/s")
    print("\n".join(lines))
    print(f"\nbench-report: wrote {args.out}/REPORT.md and its plots")


if __name__ == "__main__":
    main()
