"""The benchmark script runs and writes the figures it promises (no time is asserted)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from conftest import require_torch

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_quick_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
                          "--json", str(out), "--mix-from", str(tmp_path / "none.json")],
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["peak_step_bytes"] > 0
    mixes = figures["routed"]
    assert {m["mix"] for m in mixes} >= {"all route 0", "all route 2", "thirds"}
    for m in mixes:
        assert m["multiply_add_fraction"] > 0 and m["wall_fraction"] > 0
    assert figures["machine"]["blas"], "the BLAS kernel must be reported"
    for shape in ("mnist", "cifar"):        # the step's breakdown and its products-only floor
        b = figures[f"breakdown_{shape}"]
        assert b["products_floor_ms"] > 0 and b["npskip"]["step_ms"] > 0
    assert "matrix products alone" in run.stdout
    # the peer: ratios against PyTorch, where it is installed (required in CI)
    if importlib.util.find_spec("torch") is None:
        require_torch()                   # skips here, or fails with NPSKIP_REQUIRE_TORCH=1
    for key in ("train_ratio_vs_torch", "infer_ratio_vs_torch"):
        assert figures[key] > 0, key
    assert "npskip / torch" in run.stdout
