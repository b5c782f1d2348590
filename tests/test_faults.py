"""Fault injection: SIGKILL at random (seeded) points and a full disk, and nothing is lost.

* Output writing (select): after a kill, DIR holds one complete run (old or new: its manifest lists
  exactly its files) or a journalled commit that the next run finishes; the rerun gives the
  uninterrupted outputs and removes every staging folder. A full disk leaves DIR as it was.
* MoCo training and feature extraction: killed anywhere, ``--resume`` gives the uninterrupted
  features bit for bit (CPU, one thread).
* Benchmark sweep: killed anywhere, the same command finishes with exactly the uninterrupted rows
  (no duplicate, no torn row; equal values except train_seconds). A full disk on a row keeps the rows.
Every test that reads an input folder checks its checksums before and after.
The child processes run ``tests/_faults.py`` (see there); slow cases are marked ``slow``.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import coldseg.io.outputs as outputs
from _faults import (JOURNAL, STAGING, checksums, children, coldseg_cmd, count_events, kill_when, leftovers, run,
                     running, tree)
from coldseg.bench import results as R
from coldseg.io import atomic
from conftest import error_lines

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]


# ================================================================== selection outputs
@pytest.fixture
def picked(tmp_path, pool_dir, cli):
    """A pool, a features file, DIR holding an older run (random, 4 picks, with report when the report
    module exists) plus a user's file, and the reference of the new run (kcenter, 6, --no-report)."""
    ids = sorted(p.relative_to(pool_dir).as_posix() for p in pool_dir.rglob("*") if p.is_file())
    feats = tmp_path / "feats" / "features.npy"
    feats.parent.mkdir()
    np.save(feats, np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32))
    (feats.parent / "feature_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    old_args = ["--budget", "4", "--strategy", "random", "--features", feats, "--quiet"]
    new_args = ["--budget", "6", "--strategy", "kcenter", "--features", feats, "--quiet", "--no-report"]
    base = tmp_path / "old"
    code, _, err = cli("select", pool_dir, "--out", base, *old_args)
    assert code == 0, err
    (base / "notes.txt").write_text("my notes: not coldseg's\n")
    ref = tmp_path / "ref"
    code, _, err = cli("select", pool_dir, "--out", ref, *new_args)
    assert code == 0, err
    return {"pool": pool_dir, "base": base, "ref": ref, "new_args": new_args, "tmp": tmp_path,
            "sums": checksums(pool_dir), "old": _run_files(base), "new": _run_files(ref)}


def _run_files(folder: Path) -> dict[str, bytes]:
    """The files of the coldseg run in ``folder`` (its manifest's list), manifest.json excluded (it
    holds the run id and timings); plus the manifest's file list itself."""
    man = json.loads((folder / "manifest.json").read_text())
    out = {n: (folder / n).read_bytes() for n in man["files"] if n != "manifest.json"}
    out["<files>"] = json.dumps(man["files"]).encode()
    return out


def _coldseg_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != "notes.txt"}


def assert_old_or_new_or_journal(d: Path, picked) -> str:
    """The state a kill may leave DIR in; returns 'old', 'new' or 'journal'."""
    assert (d / "notes.txt").read_text() == "my notes: not coldseg's\n"       # never touched
    if (d / "manifest.json").exists():
        run_files = _run_files(d)
        state = "old" if run_files == picked["old"] else "new" if run_files == picked["new"] else None
        assert state, "DIR's manifest describes files that are neither the old run nor the new one"
        listed = set(json.loads((d / "manifest.json").read_text())["files"])
        extra = _coldseg_files(d) - listed - {p.name for p in d.iterdir() if p.name.startswith((STAGING, JOURNAL))}
        assert not extra, f"DIR mixes the {state} run with other files: {sorted(extra)}"
        return state
    assert (d / JOURNAL).exists(), "DIR has no manifest and no commit journal: a half-written run"
    return "journal"


def _kill_point(picked, cli, k: int, trace: Path | None = None) -> str:
    d = picked["tmp"] / f"out-k{k}"
    shutil.copytree(picked["base"], d)
    cmd = coldseg_cmd("select", picked["pool"], "--out", d, *picked["new_args"], width=None,
                      kill_after=f"coldseg.io.outputs:OutputDir.__init__:{k}", trace=trace)
    code, err, killed = kill_when(cmd, delay=600)     # it kills itself after event k
    assert killed, f"point {k}: exit {code}, not killed: {err}"
    state = assert_old_or_new_or_journal(d, picked)
    if state == "journal":                                  # any later run finishes the commit first
        assert outputs.recover(d) is True
        assert _run_files(d) == picked["new"] and not leftovers(d)
    code, _, err = cli("select", picked["pool"], "--out", d, *picked["new_args"])
    assert code == 0, f"point {k}: rerun failed: {err}"
    assert _run_files(d) == picked["new"], f"point {k}"
    assert _coldseg_files(d) == set(json.loads((d / "manifest.json").read_text())["files"]), f"point {k}"
    assert (d / "notes.txt").exists() and not leftovers(d), f"point {k}: {leftovers(d)}"
    assert checksums(picked["pool"]) == picked["sums"]
    shutil.rmtree(d)
    return state


def _n_output_events(picked) -> int:
    d = picked["tmp"] / "traced"
    shutil.copytree(picked["base"], d)
    trace = picked["tmp"] / "trace.txt"
    p = run(coldseg_cmd("select", picked["pool"], "--out", d, *picked["new_args"], width=None,
                        kill_after="coldseg.io.outputs:OutputDir.__init__:1000000", trace=trace))
    assert p.returncode == 0, p.stderr
    assert _run_files(d) == picked["new"]
    n = count_events(trace)
    assert n >= 20, trace.read_text()          # staging, writes, journal, swaps, removals, clean-up
    return n


def test_select_killed_at_random_output_points_leaves_one_complete_run(picked, cli):
    """SIGKILL at 3 seeded points of the output writing (staging → journal → swap → clean-up)."""
    n = _n_output_events(picked)
    rng = random.Random(1234)
    points = sorted(rng.sample(range(n + 1), 2)) + [rng.randrange(n // 2, n)]    # one late: the swap
    states = [_kill_point(picked, cli, k) for k in points]
    assert set(states) <= {"old", "new", "journal"}


@pytest.mark.slow
def test_select_killed_at_every_output_point_leaves_one_complete_run(picked, cli):
    n = _n_output_events(picked)
    states = [_kill_point(picked, cli, k) for k in range(n + 1)]
    assert states[0] == "old" and states[-1] == "new" and "journal" in states


class _Killed(BaseException):
    """Stands for SIGKILL inside one process: nothing after it runs (abort is skipped below)."""


def test_commit_cut_after_each_step_is_finished_by_the_next_run(tmp_path, monkeypatch):
    """In-process, every file-system step of commit(): cut there, DIR is old/new/journal, and the
    next OutputDir on DIR finishes the commit (the old run's extra file goes, a user file stays)."""
    def old_run(d):
        with outputs.OutputDir(d) as o:
            for name, text in (("a.txt", "old a"), ("b.txt", "old b"), ("only-old.txt", "x")):
                o.write_text(name, text)
            o.write_json("manifest.json", {"files": ["a.txt", "b.txt", "only-old.txt", "manifest.json"]})
            o.commit()
        (d / "notes.txt").write_text("mine")

    new_files = {"a.txt": b"new a", "b.txt": b"new b", "c.txt": b"new c"}
    steps = 0
    for cut in range(100):
        d = tmp_path / f"d{cut}"
        old_run(d)
        o = outputs.OutputDir(d)
        for name, data in new_files.items():
            o.write_bytes(name, data)
        o.write_json("manifest.json", {"files": [*new_files, "manifest.json"]})
        calls = {"n": 0}
        real = {f: getattr(os, f) for f in ("replace", "unlink", "rmdir")}

        def counted(f):
            def g(*a, **k):
                calls["n"] += 1
                if calls["n"] > cut:
                    raise _Killed
                return real[f](*a, **k)
            return g

        with monkeypatch.context() as m:
            for f in real:
                m.setattr(os, f, counted(f))
            try:
                o.commit()
                done = True
            except _Killed:
                done = False
        outputs._ACTIVE.clear()                      # the 'killed' process is gone
        files = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
        assert files.pop("notes.txt") == b"mine"
        if "manifest.json" in files:
            listed = set(json.loads(files.pop("manifest.json"))["files"]) - {"manifest.json"}
            visible = {k for k in files if not k.startswith(JOURNAL)}
            assert visible == listed, f"cut {cut}: {visible} vs manifest {listed}"
            assert {k: files[k] for k in listed} in ({"a.txt": b"old a", "b.txt": b"old b", "only-old.txt": b"x"},
                                                     new_files), f"cut {cut}"
        else:
            assert JOURNAL in files, f"cut {cut}: no manifest, no journal"
        outputs.OutputDir(d).abort()                 # the next run: recovers, stages, gives up
        after = {p.name: p.read_bytes() for p in d.iterdir()}
        assert after.pop("notes.txt") == b"mine" and json.loads(after.pop("manifest.json"))
        assert after == new_files or (cut == 0 and after == {"a.txt": b"old a", "b.txt": b"old b",
                                                             "only-old.txt": b"x"}), f"cut {cut}: {after}"
        if done:
            steps = cut
            break
    assert steps >= 8   # journal, manifest out, 3 swaps, 1 removal, manifest in, journal out, stage


def test_stale_staging_folders_go_live_ones_stay(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = outputs._host()
    stale = [d / f"{STAGING}{dead.pid}@{host}-abc", d / f"{STAGING}oldformat123"]
    live = [d / f"{STAGING}1@{host}-init", d / f"{STAGING}{dead.pid}@another.host-x"]   # pid 1 lives
    for p in stale + live:
        p.mkdir()
        (p / "selection.csv").write_text("half")
    (d / f"{JOURNAL}.{stale[0].name}.tmp").write_text("{")
    (d / "selection.csv").write_text("a user's file")
    o = outputs.OutputDir(d)
    mine = o.stage
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)
    assert not (d / f"{JOURNAL}.{stale[0].name}.tmp").exists()
    outputs.OutputDir(d).abort()                     # a second run in this process keeps the first's
    assert mine.exists()
    o.abort()
    assert not mine.exists() and (d / "selection.csv").read_text() == "a user's file"
    # NAME.tmp<pid>[.EXT]: temporaries of write-then-rename (settings.json, cached features)
    names = [f"settings.json.tmp{dead.pid}", f"moco-seed0.npy.tmp{dead.pid}.npy", "report.md.tmp1",
             f"results.csv.tmp{os.getpid()}", "notes.tmp.txt"]
    for n in names:
        (d / n).write_text("x")
    assert outputs.remove_dead_temp_files(d) == sorted(names[:2])
    assert all((d / n).exists() for n in names[2:])


def test_a_forged_commit_journal_cannot_reach_outside_the_folder(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("x")
    d = tmp_path / "out"
    d.mkdir()
    for bad in ({"stage": "../victim", "owner": "1@h", "new": [], "old": []},
                {"stage": f"{STAGING}1@h-x", "owner": "1@h", "new": [], "old": ["../victim/keep.txt"]},
                "not json"):
        (d / JOURNAL).write_text(json.dumps(bad) if isinstance(bad, dict) else bad)
        with pytest.warns(UserWarning, match="unreadable; removing it"):
            outputs.OutputDir(d).abort()
        assert (victim / "keep.txt").read_text() == "x" and not any(d.iterdir())


# ------------------------------------------------------------------ full disk
class _FullDisk:
    """``os`` as io/outputs.py (or bench/results.py) sees it, with a disk that fills after ``quota``
    bytes: the write that crosses it writes what fits, then raises ENOSPC."""

    def __init__(self, quota: int | None):
        self.quota, self.written = quota, 0

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if self.quota is not None and self.written + len(data) > self.quota:
            fit = self.quota - self.written
            if fit > 0:
                self.written += os.write(fd, bytes(data[:fit]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, data)
        self.written += n
        return n


def test_full_disk_while_writing_selection_outputs(picked, cli, monkeypatch):
    d = picked["tmp"] / "out"
    shutil.copytree(picked["base"], d)
    before = tree(d)
    meter = _FullDisk(None)
    monkeypatch.setattr(outputs, "os", meter)
    probe = picked["tmp"] / "probe"
    assert cli("select", picked["pool"], "--out", probe, *picked["new_args"])[0] == 0
    total = meter.written                          # bytes io/outputs.py writes for this run (+ journal)
    rng = random.Random(7)
    quotas = [0, *sorted(rng.sample(range(1, total - 300), 3)), total - 1]     # last: in the journal
    for q in quotas:
        monkeypatch.setattr(outputs, "os", _FullDisk(q))
        code, _, err = cli("select", picked["pool"], "--out", d, *picked["new_args"])
        assert code == 2, f"quota {q}: {err}"
        (line,) = error_lines(err)
        assert "no space left on device" in line and repr(str(d)) in line, line
        assert tree(d) == before, f"quota {q}: the previous outputs changed"
    monkeypatch.setattr(outputs, "os", os)
    assert cli("select", picked["pool"], "--out", d, *picked["new_args"])[0] == 0   # space again
    assert _run_files(d) == picked["new"] and not leftovers(d)
    assert checksums(picked["pool"]) == picked["sums"]


def test_full_disk_while_writing_features_keeps_the_previous_outputs(picked, cli, monkeypatch):
    """features.npy is saved by coldseg.api (np.save), whichever way it reaches the staging folder."""
    d = picked["tmp"] / "out"
    shutil.copytree(picked["base"], d)
    before = tree(d)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full)
    code, _, err = cli("select", picked["pool"], "--out", d, *picked["new_args"])
    monkeypatch.undo()
    assert code == 2 and tree(d) == before and not leftovers(d)
    assert checksums(picked["pool"]) == picked["sums"]
    (line,) = error_lines(err)
    assert "no space left on device" in line.lower(), line
    if repr(str(d)) not in line:   # passes outright once api.py uses OutputDir.writing (fault report)
        pytest.xfail("api._write_outputs writes features.npy itself: its error does not name the folder "
                     "(proposed diff: `with outdir.writing(): ...` / `outdir.write_npy`)")


# ================================================================== benchmark results
def _row(seed, dice=0.5):
    return {"dataset": "d", "strategy": "random", "ratio": 10.0, "n_labeled": 3, "seed": seed, "dice": dice,
            "hd95": 2.0, "train_seconds": 1.0, "device": "cpu"}


def test_full_disk_appending_a_result_row_or_record_keeps_the_rows(tmp_path, monkeypatch):
    with R.ResultsWriter(tmp_path) as w:
        for s in range(3):
            w.write(_row(s))
    R.append_jsonl(tmp_path / R.RUNS, {"key": "a"})
    R.atomic_write_text(tmp_path / R.SETTINGS, '{"settings": {}}\n')
    before = tree(tmp_path)
    for quota in (0, 10, 30):                                             # a row is 35 bytes
        monkeypatch.setattr(R, "os", _FullDisk(quota))
        with pytest.raises(outputs.OutputError, match="no space left on device") as e:
            R.ResultsWriter(tmp_path).write(_row(9))
        assert repr(str(tmp_path)) in str(e.value) and "results.csv are intact" in str(e.value)
        assert e.value.errno == errno.ENOSPC
        with pytest.raises(outputs.OutputError, match="no space left.*runs.jsonl"):
            R.append_jsonl(tmp_path / R.RUNS, {"key": "b" * 50})
        assert tree(tmp_path) == before, quota                            # no torn row or line
    monkeypatch.setattr(R, "os", os)
    monkeypatch.setattr(atomic, "os", _FsyncFindsTheDiskFull())   # ENOSPC often shows only at fsync
    with pytest.raises(outputs.OutputError, match="no space left on device while writing settings.json"):
        R.atomic_write_text(tmp_path / R.SETTINGS, '{"settings": {"x": 1}}\n')
    assert tree(tmp_path) == before                                       # old settings, no .tmp
    monkeypatch.undo()
    with R.ResultsWriter(tmp_path) as w:
        w.write(_row(9))
    assert [r["seed"] for r in R.read_results(tmp_path)] == [0, 1, 2, 9]


class _FsyncFindsTheDiskFull:
    """The ``os`` module, except that fsync finds the disk full."""

    def __getattr__(self, name):
        return getattr(os, name)

    def fsync(self, fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _pairs(tmp_path, n=16):
    from test_bench import write_pairs

    return write_pairs(tmp_path / "data", n=n)


def _key(r):
    return (r["strategy"], r["ratio"], r["seed"])


def _values(rows):
    """Rows without train_seconds (a wall time), keyed by run."""
    return {_key(r): {k: v for k, v in r.items() if k != "train_seconds"} for r in rows}


def test_full_disk_mid_sweep_keeps_rows_and_the_rerun_completes(tmp_path, monkeypatch):
    from coldseg.bench.sweep import run_benchmark
    from test_bench import fake_features, tiny_config

    data = _pairs(tmp_path)
    sums = checksums(data)
    cfg = lambda out: tiny_config(data, out, strategies=["random"], ratios=[50], seeds=[0, 1])  # noqa: E731
    run_benchmark(cfg(tmp_path / "ref"), features_fn=fake_features)
    ref = R.read_results(tmp_path / "ref")
    assert len(ref) == 4                                                   # random ×2 seeds + full ×2

    out = tmp_path / "out"
    real_write = R.ResultsWriter.write
    calls = {"n": 0}

    def fill_on_third(self, row):
        calls["n"] += 1
        if calls["n"] == 3:
            monkeypatch.setattr(R, "os", _FullDisk(20))
        return real_write(self, row)

    monkeypatch.setattr(R.ResultsWriter, "write", fill_on_third)
    with pytest.raises(outputs.OutputError, match="no space left on device") as e:
        run_benchmark(cfg(out), features_fn=fake_features)
    assert "results.csv are intact" in str(e.value)
    kept = (out / R.RESULTS).read_bytes()
    assert kept.count(b"\r\n") == 3 and kept.endswith(b"\r\n")           # header + 2 whole rows
    monkeypatch.undo()
    again = run_benchmark(cfg(out), features_fn=fake_features)
    assert again.new_runs == 2 and again.skipped_runs == 2
    rows = R.read_results(out)
    assert len(rows) == len({_key(r) for r in rows}) == 4
    assert _values(rows) == _values(ref)
    assert (out / R.RESULTS).read_bytes().startswith(kept)
    assert checksums(data) == sums


# ================================================================== slow: MoCo, embedding, sweep
MOCO = ["--image-size", "32", "--epochs", "4", "--min-steps", "0", "--batch-size", "8", "--candidates", "crop,blur", "--quiet"]


def _checkpoint(cache: Path) -> bool:
    return any(cache.glob("*/checkpoint.pt"))


def assert_complete_or_unfinished(out: Path) -> None:
    """After a kill, a fresh DIR is absent, holds only staging (and maybe a commit journal with part
    of the new files), or holds the complete run its manifest lists."""
    if not out.exists():
        return
    names = {p.name for p in out.iterdir()}
    ours = {n for n in names if n.startswith((STAGING, JOURNAL))}
    if "manifest.json" in names:
        listed = set(json.loads((out / "manifest.json").read_text())["files"])
        assert listed <= names and names - listed <= ours, sorted(names)
    else:
        assert JOURNAL in names or names == ours, sorted(names)


@pytest.mark.slow
def test_moco_training_killed_anywhere_resumes_to_the_uninterrupted_features(tmp_path, pool_dir):
    sums = checksums(pool_dir)
    args = lambda out, cache, *x: coldseg_cmd("select", pool_dir, "--budget", "6", "--out", out,  # noqa: E731
                                              "--cache-dir", cache, "--no-report", *MOCO, *x)
    t0 = time.monotonic()
    p = run(args(tmp_path / "ref", tmp_path / "cache-ref"))
    wall = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    ref = tmp_path / "ref"
    rng = random.Random(2024)
    # kill as soon as the first checkpoint exists, then at seeded fractions of the uninterrupted wall
    # time (start-up, training, eq. 7 choice, embedding, outputs); each resumed run is killed once
    # more at a seeded delay, then finished
    stale: list[str] = []
    plans = [("checkpoint", 0.0), ("checkpoint", 0.2 * wall)] + [("delay", rng.uniform(0.3, 0.8) * wall)
                                                                 for _ in range(3)]
    for i, (how, t) in enumerate(plans):
        out, cache = tmp_path / f"o{i}", tmp_path / f"c{i}"
        ready = (lambda pid, c=cache: _checkpoint(c)) if how == "checkpoint" else None
        code, err, killed = kill_when(args(out, cache), ready, delay=t)
        # after the first of 4 epochs there is always time left; a delay may outlast a warm run
        assert killed or (how == "delay" and code == 0), f"plan {i} ended with {code}: {err}"
        assert_complete_or_unfinished(out)
        code, err, _ = kill_when(args(out, cache, "--resume"), delay=rng.uniform(0.5, 1.0) * wall)
        assert_complete_or_unfinished(out)
        p = run(args(out, cache, "--resume"))
        assert p.returncode == 0, p.stderr
        assert (out / "features.npy").read_bytes() == (ref / "features.npy").read_bytes(), f"plan {i}"
        assert (out / "selection.csv").read_bytes() == (ref / "selection.csv").read_bytes(), f"plan {i}"
        man, ref_man = (json.loads((d / "manifest.json").read_text()) for d in (out, ref))
        assert man["augmentation"]["winner"] == ref_man["augmentation"]["winner"]
        if man["features"]["source"] == "moco":
            assert man["features"]["training"]["loss_per_epoch"] == ref_man["features"]["training"]["loss_per_epoch"]
        assert not leftovers(out), f"plan {i}: {leftovers(out)}"
        stale += _stale_cache_files(cache, f"plan {i}")             # e.g. checkpoint.pt.tmp<pid>
    assert checksums(pool_dir) == sums
    _xfail_if_stale(stale)


@pytest.mark.slow
def test_embedding_killed_at_random_points_resumes_to_the_uninterrupted_features(tmp_path, pool_dir):
    """`coldseg embed` killed at seeded points after training (embedding, cache writes, outputs)."""
    sums = checksums(pool_dir)
    cmd = lambda out, cache, **k: coldseg_cmd("embed", pool_dir, "--out", out, "--cache-dir", cache,  # noqa: E731
                                              *MOCO, "--resume", **k)
    trace = tmp_path / "trace.txt"
    p = run(cmd(tmp_path / "ref", tmp_path / "cache-ref", kill_after="coldseg.features.embed:embed_images:100000",
                trace=trace))
    assert p.returncode == 0, p.stderr
    n = count_events(trace)
    ref = (tmp_path / "ref" / "features.npy").read_bytes()
    rng = random.Random(99)
    stale: list[str] = []
    for k in sorted(rng.sample(range(n + 1), 5)):
        out, cache = tmp_path / f"o{k}", tmp_path / f"c{k}"
        code, err, killed = kill_when(cmd(out, cache, kill_after=f"coldseg.features.embed:embed_images:{k}"),
                                      delay=600)
        assert killed, f"point {k}: {err}"
        if out.exists():
            assert not (out / "manifest.json").exists() or (out / "features.npy").read_bytes() == ref
        p = run(cmd(out, cache))
        assert p.returncode == 0, f"point {k}: {p.stderr}"
        assert (out / "features.npy").read_bytes() == ref, f"point {k}"
        assert not leftovers(out), f"point {k}: {leftovers(out)}"
        stale += _stale_cache_files(cache, f"point {k}")
    assert checksums(pool_dir) == sums
    _xfail_if_stale(stale)


def _stale_cache_files(cache: Path, where: str) -> list[str]:
    """What a finished run leaves in its features cache beyond features.npy, confidence.npy, encoder.pt,
    ids.txt and train.json (and temporaries in the decoded-pool cache, cache/decoded/<key>/)."""
    feats = [p for p in cache.glob("*/*") if p.parent.name != "decoded"
             and p.name not in ("features.npy", "confidence.npy", "encoder.pt", "ids.txt", "train.json")]
    decoded = [p for p in cache.glob("decoded/*/*") if ".tmp" in p.name]
    return [f"{where}: {p.relative_to(cache)}" for p in feats + decoded]


def _xfail_if_stale(stale: list[str]) -> None:
    if stale:  # passes outright once features/embed.py cleans up (proposed diff in the fault report)
        pytest.xfail("the features cache keeps files of a killed run: " + "; ".join(stale))


BENCH = ["--strategies", "random,bayesian", "--ratios", "25,50", "--seeds", "2", "--tiny", "--features",
         "pixels", "--device", "cpu", "--quiet"]


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _assert_clean_results(out: Path, ref_rows):
    raw = (out / R.RESULTS).read_bytes()
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == len(ref_rows) + 1     # header + rows, whole
    rows = R.read_results(out)
    assert len({_key(r) for r in rows}) == len(rows) == len(ref_rows)           # no duplicate
    assert _values(rows) == _values(ref_rows)                                   # CPU: same values
    last = {}
    for rec in R.read_jsonl(out / R.RUNS):                                      # the last record wins
        last[_key(rec)] = rec["ids"]
    return last


@pytest.mark.slow
def test_benchmark_killed_mid_sweep_same_command_finishes_with_the_uninterrupted_rows(tmp_path):
    data = _pairs(tmp_path, n=24)
    sums = checksums(data)
    p = run(coldseg_cmd("benchmark", data, "--out", tmp_path / "ref", *BENCH, width=None, threads=2))
    assert p.returncode == 0, p.stderr
    ref_rows = R.read_results(tmp_path / "ref")
    ref_ids = _assert_clean_results(tmp_path / "ref", ref_rows)
    assert len(ref_rows) == 10
    rng = random.Random(5)
    # each plan: kill points for successive invocations of the same command, then one to finish
    plans = [[("rows", rng.randint(1, 5)), ("rows", rng.randint(7, 9))],        # one-shot, then iterative part
             [("file", "iterative_selections.jsonl"), ("delay", rng.uniform(1.0, 4.0))],
             [("delay", rng.uniform(3.0, 12.0))]]
    for i, plan in enumerate(plans):
        out = tmp_path / f"o{i}"
        cmd = coldseg_cmd("benchmark", data, "--out", out, *BENCH, width=None, threads=2)
        for how, arg in plan:
            if how == "rows":
                before = _lines(out / R.RESULTS)
                ready = lambda pid, a=arg, b=before: _lines(out / R.RESULTS) >= 1 + a and _lines(out / R.RESULTS) > b  # noqa: E731
                code, err, killed = kill_when(cmd, ready)
            elif how == "file":
                code, err, killed = kill_when(cmd, lambda pid, a=arg: (out / a).exists())
            else:
                code, err, killed = kill_when(cmd, delay=arg)
            assert killed or code == 0, err
        p = run(cmd)
        assert p.returncode == 0, f"plan {i}: {p.stderr}"
        assert _assert_clean_results(out, ref_rows) == ref_ids, f"plan {i}"
        assert (out / "report.md").exists() and not [n for n in os.listdir(out) if ".tmp" in n]
    assert checksums(data) == sums


@pytest.mark.slow
def test_benchmark_killed_between_a_runs_record_and_its_row_keeps_its_picks(tmp_path):
    """The gap between runs.jsonl and results.csv: the row is missing, so the run is redone and its
    picks recorded again (with results.csv written first, its picks would be lost for good)."""
    data = _pairs(tmp_path, n=24)
    sums = checksums(data)
    args = ["--strategies", "random", "--ratios", "50", "--seeds", "1", *BENCH[6:]]
    ref = tmp_path / "ref"
    assert run(coldseg_cmd("benchmark", data, "--out", ref, *args, width=None)).returncode == 0
    out = tmp_path / "out"
    code, err, killed = kill_when(coldseg_cmd("benchmark", data, "--out", out, *args, width=None,
                                              kill_after="coldseg.bench.results:ResultsWriter.write:0"), delay=600)
    assert killed, err
    assert len(R.read_jsonl(out / R.RUNS)) == 1 and R.read_results(out) == []
    assert run(coldseg_cmd("benchmark", data, "--out", out, *args, width=None)).returncode == 0
    ref_rows = R.read_results(ref)
    assert _assert_clean_results(out, ref_rows) == _assert_clean_results(ref, ref_rows)
    assert checksums(data) == sums


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the workers")
def test_benchmark_workers_stop_when_their_parent_is_killed(tmp_path):
    """`--workers 2`: SIGKILL the parent mid-sweep; its worker processes must not go on training the
    rest of the queue for nobody (on a GPU they would hold the card against the rerun)."""
    data = _pairs(tmp_path, n=24)
    cmd = coldseg_cmd("benchmark", data, "--out", tmp_path / "out", "--strategies", "random", "--ratios", "25,50",
                      "--seeds", "3", "--tiny", "--steps", "400", "--features", "pixels", "--device", "cpu",
                      "--workers", "2", "--quiet", width=None)
    seen: list[int] = []

    def workers_busy(pid):
        seen[:] = [c for c in children(pid) if b"spawn_main" in _cmdline(c)]     # not the resource tracker
        return len(seen) >= 2

    code, err, killed = kill_when(cmd, workers_busy, delay=3.0)
    assert killed, err
    t0 = time.monotonic()
    while any(running(w) for w in seen) and time.monotonic() - t0 < 15:
        time.sleep(0.5)
    orphans = [w for w in seen if running(w)]
    for w in orphans:
        os.kill(w, 9)
    if orphans:   # passes outright once segment/runner.py's workers watch their parent (fault report)
        pytest.xfail(f"worker processes {orphans} outlived their killed parent by 15 s")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
