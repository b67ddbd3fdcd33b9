"""``make bench`` ends with ``bench/chart.py`` drawing the run: it must draw every method the throughput
benchmark can time (a method without a style stopped the whole target after the 30-minute run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from throughput import LABELS  # noqa: E402


def test_chart_draws_every_method(tmp_path: Path) -> None:
    files = [{"orders": n, "rows": n, "bytes": n * 38, "repeat": 1, "pandas_rows": n // 10,
              "runs": {m: [1.0 + i / 10] for i, m in enumerate(LABELS)}} for n in (1000, 10000)]
    (tmp_path / "throughput.json").write_text(json.dumps(
        {"facts": {"cores": 2, "ram_gb": 24, "postgres": "18"}, "files": files, "upsert": [], "phases": []}))
    (tmp_path / "memory.json").write_text(json.dumps(
        {"idle_rss": 60 << 20, "runs": [{"bytes": 38000, "seconds": 1.0, "peak_rss": 90 << 20}]}))
    out = tmp_path / "chart.png"
    run = subprocess.run([sys.executable, str(REPO / "bench" / "chart.py"), "--results", str(tmp_path),
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
