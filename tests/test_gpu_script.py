"""benchmarks/gpu_session.sh, the script a lent GPU machine runs, still runs end to end.

GPU sessions are rare and short (15 device minutes), so a script broken by a renamed flag or a moved
file would waste one. This rehearses its `select` and `sweep` stages on the CPU at toy size (30 of the
bundled Dubai tiles, 32 px, one MoCo epoch, 3 U-Net steps) and checks what it packs under OUT, which is
what the device tool brings back. The throughput and repro stages run scripts with their own tests
(test_train_throughput.py, test_determinism.py). No timing is asserted.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "dubai_sample"


def _toy_dataset(dst: Path, n: int = 30) -> Path:
    stems = sorted(p.stem for p in (SAMPLE / "images").glob("*.jpg"))[:n]
    for sub, ext in (("images", ".jpg"), ("masks", ".png")):
        (dst / sub).mkdir(parents=True)
        for stem in stems:
            shutil.copy2(SAMPLE / sub / (stem + ext), dst / sub / (stem + ext))
    return dst


def _run(tmp_path: Path, **env_extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    data = _toy_dataset(tmp_path / "toy")
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "STAGES": "select,sweep", "STRATS": "random,herding", "SEEDS": "1",
           "RATIOS": "20", "SIZE": "32", "STEPS": "3", "EPOCHS": "1", "SSL_EPOCHS": "1", "MIN_STEPS": "0",
           "DEVICE": "cpu", "BENCH_DIR": str(tmp_path / "bench"), "PACK_S": "10", **env_extra}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), str(data), str(out), "300"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc, out


def _results(out: Path) -> list[dict]:
    with tarfile.open(out / "bench.tgz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/results.csv"))
        return list(csv.DictReader(io.TextIOWrapper(tar.extractfile(member), encoding="utf-8")))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_session_select_and_sweep_stages_run_on_cpu(tmp_path):
    proc, out = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    timings = (out / "timings.txt").read_text()
    assert "select rc=0" in timings and "sweep rc=0" in timings, timings
    with tarfile.open(out / "select_run.tgz") as tar:
        names = {Path(m.name).name for m in tar.getmembers()}
    assert {"selected.txt", "selection.csv", "manifest.json", "labelstudio.json"} <= names
    rows = _results(out)
    assert {r["strategy"] for r in rows} == {"random", "herding", "full"}
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    check = (out / "target_check.md").read_text()
    assert "| never below |" in check and "`herding`" in check       # the default's target check ran on the sweep
    assert "mean over ratios (per seed)" in check                    # and the table of every strategy


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_session_pixel_sweep_with_a_bracketed_strategy(tmp_path):
    """FEATURES=pixels skips MoCo; a strategy with settings in brackets reaches the sweep and its tables."""
    proc, out = _run(tmp_path, STAGES="sweep", FEATURES="pixels", STRATS="random,herding[normalize=false]")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep rc=0" in (out / "timings.txt").read_text()
    assert {r["strategy"] for r in _results(out)} == {"random", "herding[normalize=false]", "full"}
    assert "herding[normalize=false]" in (out / "target_check.md").read_text()   # the table of every strategy
