"""Chart of a bench run (issue 8 item 6): throughput (MB/s) and the direct engine's peak RSS against file size.

    .venv/bin/python bench/chart.py [--results DIR] [--out docs/benchmarks-throughput-memory.png]

Reads ``throughput.json`` and ``memory.json`` that ``bench/throughput.py`` and ``bench/memory.py`` wrote
(medians are plotted) and writes one PNG with two panels (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import DEFAULT_RESULTS, REPO, median, note  # noqa: E402
from throughput import LABELS  # noqa: E402

#: color, marker and line of each method of bench/throughput.py (LABELS); a variant shares its method's color.
STYLE = {"copy": ("k", "o", "-"), "copy-lineage": ("0.5", "o", "-"),
         "direct": ("tab:blue", "s", "-"), "direct-copying": ("tab:blue", "s", "--"),
         "redrop-attach": ("tab:cyan", "D", "-"), "redrop-copying": ("tab:cyan", "D", "--"),
         "spark": ("tab:orange", "^", "-"), "jdbc": ("tab:red", "v", "-"), "pandas": ("tab:green", "x", "-"),
         "dlt-csv": ("tab:purple", "P", "-"), "dlt-parquet": ("tab:purple", "P", "--")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks-throughput-memory.png")
    args = ap.parse_args()
    tp = json.loads((args.results / "throughput.json").read_text())
    mem_path = args.results / "memory.json"
    mem = json.loads(mem_path.read_text()) if mem_path.exists() else None
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 7.2))
    methods = [m for m in LABELS if any(m in f["runs"] for f in tp["files"])]
    for m in methods:
        pts = sorted((f["bytes"] / 1e6, f["bytes"] / 1e6 / median(f["runs"][m])) for f in tp["files"] if m in f["runs"])
        color, marker, line = STYLE[m]
        label = LABELS[m] + (" (extrapolated)" if m == "pandas" else "")
        left.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, linestyle=line, label=label)
    if mem:  # the direct engine through the CLI, all memory sizes (whole command, start-up included)
        pts = sorted((r["bytes"] / 1e6, r["bytes"] / 1e6 / r["seconds"]) for r in mem["runs"])
        left.plot([p[0] for p in pts], [p[1] for p in pts], marker="s", linestyle=":", color="tab:blue",
                  label="filedrop load --engine direct (CLI, append)")
    left.set_xscale("log")
    left.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    left.set_xlabel("file size, MB (log scale)")
    left.set_ylabel("throughput, MB/s (median)")
    left.set_title("Load throughput, generated orders files")
    left.grid(True, which="both", alpha=0.3)
    left.set_ylim(0, left.get_ylim()[1] * 1.05)
    left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.14), ncol=2)  # below: one line per method
    if mem:
        pts = sorted((r["bytes"] / 1e6, r["peak_rss"] / 2**20) for r in mem["runs"])
        right.plot([p[0] for p in pts], [p[1] for p in pts], marker="s", color="tab:blue",
                   label="filedrop load --engine direct, peak RSS")
        right.axhline(300e6 / 2**20, color="tab:red", linestyle="--", label="target: < 300 MB")
        right.axhline(mem["idle_rss"] / 2**20, color="0.5", linestyle=":", label="filedrop load --help (imports only)")
        right.set_ylim(0, max(320, max(p[1] for p in pts) * 1.2))
        right.legend(fontsize=7, loc="lower right")
    right.set_xlabel("file size, MB")
    right.set_ylabel("peak RSS, MiB")
    right.set_title("Direct engine memory")
    right.grid(True, alpha=0.3)
    facts = tp.get("facts", {})
    fig.suptitle(f"filedrop benchmarks — {facts.get('cores')} cores, {facts.get('ram_gb')} GiB, "
                 f"PostgreSQL {facts.get('postgres')}" + (f", Spark {facts['spark']}" if facts.get("spark") else ""),
                 fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    note(f"chart written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
