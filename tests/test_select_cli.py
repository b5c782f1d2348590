"""`coldseg select` / `coldseg embed` end to end: exit codes on bad input (nothing left in DIR), the
output files' contract, an older run in DIR, bring-your-own features, determinism and the cache."""
import csv
import json
import os
import re
import time
import urllib.parse

import numpy as np
import pytest
import torch

import coldseg
import coldseg.features.embed
from conftest import HAS_REPORT, KINDS, error_lines, snapshot, write_pool

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest

CSV_HEADER = ["rank", "id", "path", "cluster", "distance_to_centroid"]


def kind_features(ids, seed=0, d=8):
    """Hand-made features: one well-separated blob per picture kind (file names start with the kind)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.1, (len(ids), d))
    for r, i in enumerate(ids):
        X[r, KINDS.index(i.rsplit("/", 1)[-1].split("_")[0])] += 5.0
    return X


def write_features(folder, ids, X):
    """features.npy + feature_ids.txt, as `coldseg embed` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "features.npy", np.asarray(X, np.float32))
    (folder / "feature_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    return folder / "features.npy"


def read_csv(path):
    with open(path, newline="") as f:
        r = csv.reader(f)
        return next(r), list(r)


def no_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("MoCo training ran although it should not")

    monkeypatch.setattr(coldseg.features.embed, "train_moco", boom)


# --------------------------------------------------------------------------------------------------
# bad input: non-zero exit, one-line reason, nothing written in DIR
# --------------------------------------------------------------------------------------------------
def assert_failed(code, err, *needles):
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_images_folder(tmp_path, cli):
    out = tmp_path / "out"
    code, _, err = cli("select", tmp_path / "nope", "--budget", "3", "--out", out)
    assert_failed(code, err, "does not exist", "nope")
    assert not out.exists()


def test_missing_folder_leaves_no_parent_folders_either(tmp_path, cli):
    out = tmp_path / "results" / "2024" / "run1"
    code, _, err = cli("select", tmp_path / "nope", "--budget", "3", "--out", out)
    assert_failed(code, err, "does not exist")
    assert not (tmp_path / "results").exists()


def test_images_path_is_a_file(tmp_path, cli):
    f = tmp_path / "one.png"
    f.write_bytes(b"x")
    code, _, err = cli("select", f, "--budget", "1", "--out", tmp_path / "out")
    assert_failed(code, err, "is not a folder")
    assert not (tmp_path / "out").exists()


def test_folder_without_readable_image(tmp_path, cli):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "broken.png").write_bytes(os.urandom(300))
    (pool / "empty.jpg").write_bytes(b"")
    (pool / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    code, _, err = cli("select", pool, "--budget", "1", "--out", out)
    assert_failed(code, err, "none of the 2 image files")
    assert "skipped unreadable broken.png" in err and "skipped unreadable empty.jpg" in err
    assert not out.exists()


def test_folder_with_no_image_files_at_all(tmp_path, cli):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "notes.txt").write_text("hello")
    code, _, err = cli("select", pool, "--budget", "1", "--out", tmp_path / "out")
    assert_failed(code, err, "no image files")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("budget", [
    ["--budget", "0"], ["--budget", "-3"], ["--budget", "0%"], ["--budget", "abc"], ["--budget", "1.5"],
    ["--budget", "nan%"], ["--budget=-10%"], ["--budget", ""],
])
def test_budget_not_positive_or_not_a_number(tmp_path, make_pool, cli, budget):
    pool = tmp_path / "pool"
    make_pool(pool, 5)
    out = tmp_path / "out"
    code, _, err = cli("select", pool, *budget, "--out", out)
    assert_failed(code, err, "budget")
    assert not out.exists()


@pytest.mark.parametrize("budget,images", [("6", 6), ("150%", 8), ("101%", 6)])
def test_budget_larger_than_the_readable_images(tmp_path, make_pool, cli, budget, images):
    pool = tmp_path / "pool"
    make_pool(pool, 5)
    (pool / "corrupt.png").write_bytes(os.urandom(100))  # 6 files, 5 readable
    out = tmp_path / "out"
    code, _, err = cli("select", pool, "--budget", budget, "--out", out)
    assert_failed(code, err, f"({images} images) exceeds the pool of 5 readable")
    assert not out.exists()


def test_budget_of_all_images_is_accepted(tmp_path, make_pool, cli, monkeypatch):
    pool = tmp_path / "pool"
    ids = make_pool(pool, 5)
    feats = write_features(tmp_path / "feats", ids, kind_features(ids))
    no_training(monkeypatch)
    for budget in ("5", "100%"):
        out = tmp_path / f"out{budget.strip('%')}"
        code, _, err = cli("select", pool, "--budget", budget, "--out", out, "--features", feats,
                           "--no-report", "--quiet")
        assert code == 0, err
        _, rows = read_csv(out / "selection.csv")
        assert sorted(r[1] for r in rows) == ids


def test_failed_run_leaves_an_existing_dir_unchanged(tmp_path, make_pool, cli):
    pool = tmp_path / "pool"
    make_pool(pool, 5)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    (out / "manifest.json").write_text('{"files": ["mine.txt"]}')
    before = snapshot(out)
    for budget in ("0", "9"):
        code, _, err = cli("select", pool, "--budget", budget, "--out", out)
        assert_failed(code, err, "budget")
        assert snapshot(out) == before


def test_out_is_an_existing_file(tmp_path, make_pool, cli):
    pool = tmp_path / "pool"
    make_pool(pool, 5)
    out = tmp_path / "taken"
    out.write_text("a file, not a folder")
    code, _, err = cli("select", pool, "--budget", "2", "--out", out)
    assert_failed(code, err, "exists and is not a folder")
    assert out.read_text() == "a file, not a folder"


def test_out_below_a_file(tmp_path, make_pool, cli):
    pool = tmp_path / "pool"
    make_pool(pool, 5)
    f = tmp_path / "taken"
    f.write_text("x")
    code, _, err = cli("select", pool, "--budget", "2", "--out", f / "out")
    assert_failed(code, err, "cannot write to output folder")
    assert f.read_text() == "x"


def test_out_that_cannot_be_created(tmp_path, make_pool, cli):
    pool = tmp_path / "pool"
    make_pool(pool, 5)
    out = "/proc/coldseg-test-no-such-dir/out"  # /proc refuses new folders, even to root
    code, _, err = cli("select", pool, "--budget", "2", "--out", out)
    assert_failed(code, err, "cannot write to output folder", out)
    assert not os.path.exists("/proc/coldseg-test-no-such-dir")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_out_under_a_read_only_parent(tmp_path, make_pool, cli):
    pool = tmp_path / "pool"
    make_pool(pool, 5)
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        code, _, err = cli("select", pool, "--budget", "2", "--out", parent / "out")
        assert_failed(code, err, "cannot write to output folder")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


# --------------------------------------------------------------------------------------------------
# one real run (tiny MoCo, strategy ca) shared by the output-contract tests
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import TINY_CANDIDATES
    from coldseg.features.train import MocoConfig

    base = tmp_path_factory.mktemp("run")
    pool = base / "pool"
    write_pool(pool, 24)
    cfg = MocoConfig(image_size=32, epochs=2, batch_size=8, width=8, eval_images=32, candidates=TINY_CANDIDATES,
                     min_steps=0)
    out = base / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_torch_thread does for the tests (a module fixture runs before it)
    try:
        res = coldseg.select(pool, 6, out=out, strategy="ca", seed=0, moco=cfg, cache_dir=base / "cache",
                             report=HAS_REPORT, progress=False)
    finally:
        torch.set_num_threads(threads)
    return {"res": res, "out": out, "pool": pool, "cfg": cfg, "cache": base / "cache"}


def test_selection_csv(run):
    header, rows = read_csv(run["out"] / "selection.csv")
    assert header == CSV_HEADER
    assert [int(r[0]) for r in rows] == list(range(1, 7))
    ids = [r[1] for r in rows]
    assert len(set(ids)) == 6 and set(ids) <= set(run["res"].pool.ids)
    assert ids == run["res"].ids
    for r in rows:
        assert r[2] == str((run["pool"] / r[1]).resolve())
        assert float(r[4]) >= 0
    k = run["res"].manifest["selection"]["info"]["k"]
    clusters = [int(r[3]) for r in rows]
    assert all(0 <= c < k for c in clusters)
    # picks per cluster in the file agree with the exact-budget split the manifest reports
    per = np.bincount(clusters, minlength=k).tolist()
    assert per == run["res"].manifest["selection"]["info"]["picks_per_cluster"]


def test_selected_txt_and_labelstudio(run):
    _, rows = read_csv(run["out"] / "selection.csv")
    lines = (run["out"] / "selected.txt").read_text().splitlines()
    assert lines == [r[2] for r in rows]
    assert all(os.path.isfile(p) for p in lines)
    tasks = json.loads((run["out"] / "labelstudio.json").read_text())
    assert isinstance(tasks, list) and len(tasks) == 6
    for t, r in zip(tasks, rows):
        assert isinstance(t["data"]["image"], str)
        assert t["data"]["coldseg_id"] == r[1]
        assert t["data"]["image"].endswith(urllib.parse.quote(r[2].lstrip("/")))


def test_features_npy_and_ids(run):
    X = np.load(run["out"] / "features.npy")
    assert X.shape == (24, 64) and X.dtype == np.float32     # backbone of the width-8 ResNet-18: 8 · 8
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    ids = (run["out"] / "feature_ids.txt").read_text().splitlines()
    assert ids == run["res"].pool.ids and len(ids) == 24
    assert np.array_equal(X, run["res"].features)


def test_manifest(run):
    man = json.loads((run["out"] / "manifest.json").read_text())
    cfg = run["cfg"]
    assert man["strategy"] == "ca" and man["budget"] == 6 and man["seed"] == 0
    assert man["pool"]["size"] == 24 and man["pool"]["skipped"] == [] and man["pool"]["duplicates"] == []
    info = man["selection"]["info"]
    lo, hi = info["k_range"]
    assert (lo, hi) == (2, 6)  # K never above the budget
    assert set(info["silhouette"]) == {str(k) for k in range(lo, hi + 1)}
    assert info["k"] == int(max(info["silhouette"], key=info["silhouette"].get))
    assert sum(info["picks_per_cluster"]) == 6 and sum(info["cluster_sizes"]) == 24
    aug = man["augmentation"]
    assert set(aug["candidates"]) == set(cfg.candidates.split(","))
    assert aug["winner"] == max(aug["candidates"], key=aug["candidates"].get)
    assert aug["chosen_after_epoch"] == 1
    f = man["features"]
    assert f["source"] == "moco" and f["dim"] == 8 * cfg.width and f["layer"] == "backbone"
    assert f["settings"] == json.loads(json.dumps(cfg.to_dict()))
    assert len(f["training"]["loss_per_epoch"]) == 2
    assert {"coldseg", "torch", "numpy", "scikit-learn", "python"} <= set(man["versions"])
    assert man["device"].startswith("cpu")
    assert {"read_images_s", "features_s", "select_s", "total_s"} <= set(man["timings"])
    assert all(v >= 0 for v in man["timings"].values())
    on_disk = sorted(p.name for p in run["out"].iterdir())
    assert sorted(man["files"]) == on_disk  # no staging folder or stray file left
    assert {"selection.csv", "selected.txt", "labelstudio.json", "manifest.json", "features.npy",
            "feature_ids.txt"} <= set(on_disk)


@pytest.mark.skipif(not HAS_REPORT, reason="coldseg.report.html is not written yet")
def test_report_html_and_its_figures(run):
    html = (run["out"] / "report.html").read_text()
    figures = re.findall(r'src="([^"]+\.png)"', html)
    assert figures, "report.html shows no figure"
    for name in figures:
        assert (run["out"] / name).is_file()
    man = json.loads((run["out"] / "manifest.json").read_text())
    assert "report.html" in man["files"] and set(figures) <= set(man["files"])


def test_same_seed_same_selection_and_features(run, tmp_path):
    res = coldseg.select(run["pool"], 6, out=tmp_path / "out", strategy="ca", seed=0, moco=run["cfg"],
                         cache_dir=tmp_path / "cache2", report=False, progress=False)
    assert res.manifest["features"]["source"] == "moco"  # trained again, not read from a cache
    assert np.array_equal(res.features, run["res"].features)
    assert (tmp_path / "out" / "selection.csv").read_bytes() == (run["out"] / "selection.csv").read_bytes()


def test_other_seed_other_features(run, tmp_path):
    res = coldseg.select(run["pool"], 6, strategy="ca", seed=1, moco=run["cfg"], cache_dir=tmp_path / "c",
                         report=False, progress=False)
    assert res.features.shape == run["res"].features.shape
    assert np.abs(res.features - run["res"].features).max() > 1e-2


def test_new_budget_reuses_the_cache(run, tmp_path, monkeypatch):
    from dataclasses import replace

    # other settings do not hit the cache
    other = replace(run["cfg"], epochs=1, candidates="none")
    res2 = coldseg.select(run["pool"], 3, strategy="random", seed=0, moco=other,
                          cache_dir=run["cache"], report=False, progress=False)
    assert res2.manifest["features"]["source"] == "moco"

    no_training(monkeypatch)
    t = time.perf_counter()
    res = coldseg.select(run["pool"], 9, out=tmp_path / "out", strategy="ca", seed=0, moco=run["cfg"],
                         cache_dir=run["cache"], report=False, progress=False)
    assert time.perf_counter() - t < 20
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["features"]["source"] == "cache" and man["budget"] == 9
    assert np.array_equal(res.features, run["res"].features)
    # the cache also keeps the training facts for the manifest
    assert man["features"]["augmentation"] == run["res"].manifest["augmentation"]


# --------------------------------------------------------------------------------------------------
# bring-your-own features
# --------------------------------------------------------------------------------------------------
def test_embed_then_select_with_features_file(run, tmp_path, cli, tiny_cli, monkeypatch):
    fdir = tmp_path / "emb"
    code, out, err = cli("embed", run["pool"], "--out", fdir, "--image-size", "32", "--epochs", "2", "--min-steps", "0",
                         "--batch-size", "8", "--cache-dir", tmp_path / "cache", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in fdir.iterdir()) == ["feature_ids.txt", "features.npy", "manifest.json"]
    X = np.load(fdir / "features.npy")
    # the CLI embed trains the same model as the API run with the same settings and seed
    assert np.array_equal(X, run["res"].features)
    assert (fdir / "feature_ids.txt").read_text().splitlines() == run["res"].pool.ids
    assert json.loads((fdir / "manifest.json").read_text())["features"]["source"] == "moco"

    no_training(monkeypatch)
    sel = tmp_path / "sel"
    t = time.perf_counter()
    code, out, err = cli("select", run["pool"], "--budget", "6", "--out", sel, "--features",
                         fdir / "features.npy", "--strategy", "ca", "--cache-dir", tmp_path / "c2", "--quiet",
                         "--no-report")
    assert code == 0, err
    assert time.perf_counter() - t < 20
    man = json.loads((sel / "manifest.json").read_text())
    assert man["features"]["source"] == "file"
    assert man["features"]["file"] == str((fdir / "features.npy").resolve())
    assert not (tmp_path / "c2").exists()  # nothing trained, nothing cached
    # same features, seed and strategy as the module run -> the same annotation list
    assert read_csv(sel / "selection.csv") == read_csv(run["out"] / "selection.csv")


def test_features_file_missing_a_pool_id(tmp_path, make_pool, cli, monkeypatch):
    pool = tmp_path / "pool"
    ids = make_pool(pool, 6)
    X = kind_features(ids)
    gone = ids[3]
    feats = write_features(tmp_path / "f", ids[:3] + ids[4:], np.delete(X, 3, axis=0))
    no_training(monkeypatch)
    out = tmp_path / "out"
    code, _, err = cli("select", pool, "--budget", "2", "--out", out, "--features", feats)
    assert_failed(code, err, "1 pool image(s) have no row", gone)
    assert not out.exists()


def test_features_npz_with_ids_in_another_order(tmp_path, make_pool, cli, monkeypatch):
    pool = tmp_path / "pool"
    ids = make_pool(pool, 12)
    X = kind_features(ids)
    no_training(monkeypatch)
    npy = write_features(tmp_path / "f", ids, X)
    code, _, err = cli("select", pool, "--budget", "4", "--out", tmp_path / "a", "--features", npy,
                       "--strategy", "ca", "--no-report", "--quiet")
    assert code == 0, err
    perm = np.random.default_rng(3).permutation(len(ids))
    npz = tmp_path / "feats.npz"
    np.savez(npz, features=X[perm], ids=np.array(ids)[perm], extra=np.zeros(3))
    code, _, err = cli("select", pool, "--budget", "4", "--out", tmp_path / "b", "--features", npz,
                       "--strategy", "ca", "--no-report", "--quiet")
    assert code == 0, err
    assert read_csv(tmp_path / "b" / "selection.csv") == read_csv(tmp_path / "a" / "selection.csv")
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["features"]["source"] == "file" and man["features"]["dim"] == 8
    # 3 well-separated kinds -> the paper's silhouette K = 3 and the 4 picks cover every kind
    assert man["selection"]["info"]["k"] == 3
    _, rows = read_csv(tmp_path / "b" / "selection.csv")
    assert {r[1].rsplit("/", 1)[-1].split("_")[0] for r in rows} == set(KINDS)


def test_npz_without_features_array(tmp_path, make_pool, cli):
    pool = tmp_path / "pool"
    make_pool(pool, 4)
    npz = tmp_path / "bad.npz"
    np.savez(npz, embeddings=np.zeros((4, 3)))
    code, _, err = cli("select", pool, "--budget", "2", "--out", tmp_path / "out", "--features", npz)
    assert_failed(code, err, "no array named 'features'")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------
# an older run in DIR
# --------------------------------------------------------------------------------------------------
def test_rerun_into_dir_of_an_older_run_replaces_exactly_its_files(tmp_path, make_pool, cli, monkeypatch):
    pool = tmp_path / "pool"
    ids = make_pool(pool, 12)
    feats = write_features(tmp_path / "f", ids, kind_features(ids))
    no_training(monkeypatch)
    out = tmp_path / "out"
    code, _, err = cli("select", pool, "--budget", "5", "--out", out, "--strategy", "random", "--features",
                       feats, "--quiet", *([] if HAS_REPORT else ["--no-report"]))
    assert code == 0, err
    old = json.loads((out / "manifest.json").read_text())
    assert len(read_csv(out / "selection.csv")[1]) == 5
    # an older coldseg version wrote a file this one does not; the user keeps notes beside the run
    (out / "old_scores.csv").write_text("stale")
    (tmp_path / "outside.txt").write_text("never touched")
    old["files"] += ["old_scores.csv", "../outside.txt"]
    (out / "manifest.json").write_text(json.dumps(old))
    (out / "my_notes.md").write_text("mine")

    code, _, err = cli("select", pool, "--budget", "7", "--out", out, "--strategy", "random", "--features",
                       feats, "--quiet", "--no-report")
    assert code == 0, err
    new = json.loads((out / "manifest.json").read_text())
    on_disk = {p.name for p in out.iterdir()}
    assert on_disk == set(new["files"]) | {"my_notes.md"}
    assert not (out / "old_scores.csv").exists()
    assert not (out / "report.html").exists()  # the old run's report is gone with it
    assert (out / "my_notes.md").read_text() == "mine"
    assert (tmp_path / "outside.txt").read_text() == "never touched"
    assert len(read_csv(out / "selection.csv")[1]) == 7
    assert len((out / "selected.txt").read_text().splitlines()) == 7
    assert len(json.loads((out / "labelstudio.json").read_text())) == 7
    assert new["budget"] == 7 and new["run_id"] != old["run_id"]


# --------------------------------------------------------------------------------------------------
# end to end through the real CLI (default width-64 encoder)
# --------------------------------------------------------------------------------------------------
def test_end_to_end_cli_on_a_tiny_synthetic_pool(pool_dir, tmp_path, cli):
    out = tmp_path / "picks"
    code, stdout, err = cli("select", pool_dir, "--budget", "25%", "--out", out, "--image-size", "32",
                            "--epochs", "2", "--min-steps", "0", "--batch-size", "8", "--candidates", "crop,blur",
                            "--cache-dir", tmp_path / "cache", "--quiet")
    assert code == 0, err
    assert error_lines(err) == []
    assert f"picked 6 of 24 images with '{coldseg.DEFAULT_STRATEGY}'" in stdout
    expected = {"selection.csv", "selected.txt", "labelstudio.json", "manifest.json", "features.npy",
                "feature_ids.txt"} | ({"report.html"} if HAS_REPORT else set())
    on_disk = {p.name for p in out.iterdir()}
    assert expected <= on_disk
    assert not any(n.startswith(".coldseg-staging") for n in on_disk)
    man = json.loads((out / "manifest.json").read_text())
    assert man["features"]["settings"]["width"] == 64 and man["image_size"] == 32
    assert man["features"]["settings"]["epochs"] == 2 and man["budget"] == 6
    assert np.load(out / "features.npy").shape == (24, 512)          # the ResNet-18 backbone's pooled output
    assert man["features"]["layer"] == "backbone"
    assert len(read_csv(out / "selection.csv")[1]) == 6
    assert (tmp_path / "cache").is_dir()  # --cache-dir honoured (not ~/.cache)
    # the paper's projection-head features on request: 128-d, from the same cached training
    code, _, err = cli("select", pool_dir, "--budget", "25%", "--out", tmp_path / "head", "--image-size", "32",
                       "--epochs", "2", "--min-steps", "0", "--batch-size", "8", "--candidates", "crop,blur",
                       "--cache-dir", tmp_path / "cache", "--feature-layer", "head", "--quiet")
    assert code == 0, err
    assert np.load(tmp_path / "head" / "features.npy").shape == (24, 128)
    assert json.loads((tmp_path / "head" / "manifest.json").read_text())["features"]["layer"] == "head"
    (entry,) = [p.parent for p in (tmp_path / "cache").glob("*/features.npy")]
    assert (entry / "features-head.npy").exists() and (entry / "encoder.pt").exists()


# --------------------------------------------------------------------------------------------------
# bad options are named before any image is read
# --------------------------------------------------------------------------------------------------
def no_reading(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the images folder was read although the command should have failed first")

    monkeypatch.setattr(coldseg.api, "_load_pool", boom)


@pytest.mark.parametrize("device,needle", [
    ("cuda", "--device cuda: CUDA is not available on this machine; use --device cpu or auto"),
    ("cuda:1", "--device cuda:1: CUDA is not available"),
    ("gpu", "--device gpu: use auto, cpu or cuda[:i]"),
    ("tpu", "--device tpu: use auto, cpu or cuda[:i]"),
    ("mps", "--device mps: coldseg runs on the CPU or on CUDA only"),
])
def test_unusable_device_fails_before_any_image_is_read(tmp_path, make_pool, cli, monkeypatch, device, needle):
    pool = tmp_path / "pool"
    ids = make_pool(pool, 6)
    feats = write_features(tmp_path / "f", ids, kind_features(ids))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, even on a GPU box
    no_reading(monkeypatch)
    out = tmp_path / "out"
    for cmd in (["select", pool, "--budget", "3", "--out", out], ["select", pool, "--budget", "3", "--out", out,
                "--features", feats], ["embed", pool, "--out", out]):
        code, _, err = cli(*cmd, "--device", device, "--cache-dir", tmp_path / "cache", "--quiet")
        assert_failed(code, err, needle)
        assert "Traceback" not in err
        assert not out.exists()


def test_missing_cuda_device_index_is_named(tmp_path, make_pool, cli, monkeypatch):
    pool = tmp_path / "pool"
    make_pool(pool, 6)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    no_reading(monkeypatch)
    code, _, err = cli("select", pool, "--budget", "3", "--out", tmp_path / "out", "--device", "cuda:1")
    assert_failed(code, err, "--device cuda:1: this machine has 1 CUDA device(s), cuda:0 to cuda:0")


@pytest.mark.parametrize("spec,needle", [
    ("ca-typical[start=bogus]", "start='bogus'"),
    ("ca-typical[allocation=weird]", "allocation='weird'"),
    ("typiclust[k_nn=-3]", "k_nn=-3"),
    ("probcover[delta=abc]", "delta='abc' must be a positive number"),
    ("kcenter[start=nowhere]", "start='nowhere'"),
])
def test_bad_strategy_setting_fails_before_any_image_is_read(tmp_path, make_pool, cli, monkeypatch, spec, needle):
    pool = tmp_path / "pool"
    make_pool(pool, 6)
    no_reading(monkeypatch)
    out = tmp_path / "out"
    code, _, err = cli("select", pool, "--budget", "3", "--out", out, "--strategy", spec, "--quiet")
    assert_failed(code, err, f"--strategy '{spec}': ", needle)
    assert not out.exists()
    with pytest.raises(ValueError, match=re.escape(f"strategy '{spec}': ")):  # the Python API checks it too
        coldseg.select(pool, 3, strategy=spec, progress=False)


def test_strategy_check_is_fast_and_leaves_every_selection_unchanged(tmp_path, make_pool):
    from conftest import pick
    from coldseg.select.registry import available, check_strategy, get_selector

    pool = tmp_path / "pool"
    ids = make_pool(pool, 12)
    X = kind_features(ids, d=5).astype(np.float32)  # what coldseg.select hands the selector
    t = time.perf_counter()
    for name in available():
        check_strategy(name)
    assert time.perf_counter() - t < 2.0  # milliseconds each; generous for a loaded 2-core machine
    for name in available():
        if get_selector(name).needs:
            continue  # reads MoCo's confidence: refuses given features
        direct = pick(get_selector(name), X, 4, random_state=7)
        res = coldseg.select(pool, 4, strategy=name, seed=7, features=X, report=False, progress=False)
        assert np.array_equal(res.selection.indices, direct.indices), name
        assert np.array_equal(res.selection.distances, direct.distances), name


@pytest.mark.parametrize("name", ["bayesian", "coreset-iter"])
def test_iterative_strategies_are_named_as_benchmark_only(tmp_path, make_pool, cli, monkeypatch, name):
    pool = tmp_path / "pool"
    make_pool(pool, 6)
    no_reading(monkeypatch)
    code, _, err = cli("select", pool, "--budget", "3", "--out", tmp_path / "out", "--strategy", name)
    assert_failed(code, err, f"strategy '{name}' is an iterative baseline", "`coldseg benchmark` only")
    assert "unknown strategy" not in err


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999", str(2**32)])
def test_seed_out_of_range_is_named(tmp_path, make_pool, cli, monkeypatch, seed):
    pool = tmp_path / "pool"
    make_pool(pool, 6)
    no_reading(monkeypatch)
    for cmd in (["select", pool, "--budget", "3"], ["embed", pool]):
        code, _, err = cli(*cmd, "--out", tmp_path / "out", f"--seed={seed}")
        assert_failed(code, err, f"--seed {seed} must be a whole number from 0 to 4294967295")
    assert not (tmp_path / "out").exists()


def test_empty_out_or_images_dir_is_refused(tmp_path, make_pool, cli, monkeypatch):
    pool = tmp_path / "pool"
    make_pool(pool, 6)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # Path("") is the current folder: nothing may land here
    no_reading(monkeypatch)
    for args, needle in ((["select", pool, "--budget", "3", "--out", ""], "--out must not be empty"),
                         (["select", "", "--budget", "3", "--out", "o"], "IMAGES_DIR must not be empty"),
                         (["embed", pool, "--out", ""], "--out must not be empty"),
                         (["embed", "", "--out", "o"], "IMAGES_DIR must not be empty"),
                         (["select", pool, "--budget", "3", "--out", "o", "--cache-dir", ""],
                          "--cache-dir must not be empty")):
        code, _, err = cli(*args)
        assert_failed(code, err, needle)
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_features_without_ids_warn_that_the_sorted_order_is_assumed(tmp_path, make_pool, cli, monkeypatch, kind):
    pool = tmp_path / "pool"
    ids = make_pool(pool, 9)
    X = kind_features(ids)
    no_training(monkeypatch)
    with_ids = write_features(tmp_path / "f", ids, X)
    code, _, err = cli("select", pool, "--budget", "3", "--out", tmp_path / "a", "--features", with_ids,
                       "--strategy", "kcenter", "--no-report", "--quiet")
    assert code == 0, err
    bare = tmp_path / "bare" / f"features.{kind}"
    bare.parent.mkdir()
    if kind == "npy":
        np.save(bare, X.astype(np.float32))
        needle = "no feature_ids.txt or features.ids.txt beside it"
    else:
        np.savez(bare, features=X.astype(np.float32))
        needle = "no array named 'ids' in it"
    with pytest.warns(UserWarning, match=re.escape(needle)) as rec:
        code, _, err = cli("select", pool, "--budget", "3", "--out", tmp_path / "b", "--features", bare,
                           "--strategy", "kcenter", "--no-report", "--quiet")
    assert code == 0, err
    (w,) = [w for w in rec if "has no ids" in str(w.message)]
    assert "sorted id order" in str(w.message) and "coldseg embed writes feature_ids.txt" in str(w.message)
    assert read_csv(tmp_path / "b" / "selection.csv") == read_csv(tmp_path / "a" / "selection.csv")
    # a row count that cannot be the pool's is still refused
    np.save(tmp_path / "bare" / "short.npy", X[:5])
    code, _, err = cli("select", pool, "--budget", "3", "--out", tmp_path / "c", "--features",
                       tmp_path / "bare" / "short.npy")
    assert_failed(code, err, "has 5 rows but the pool has 9 images and no ids file was found")


@pytest.mark.parametrize("content", [b"a,b,c\n1,2,3\n", b"", b"\x80\x04K\x01."])   # CSV, empty, a pickle
def test_features_file_that_is_not_numpy_is_named(tmp_path, make_pool, cli, content):
    pool = tmp_path / "pool"
    make_pool(pool, 6)
    f = tmp_path / "f.csv"
    f.write_bytes(content)
    code, _, err = cli("select", pool, "--budget", "3", "--out", tmp_path / "out", "--features", f)
    assert_failed(code, err, f"'{f}' is not a NumPy .npy or .npz file")
    assert "pickle" not in err
    assert not (tmp_path / "out").exists()


def test_unusable_cache_dir_is_named(tmp_path, make_pool, cli, monkeypatch):
    pool = tmp_path / "pool"
    make_pool(pool, 6)
    no_reading(monkeypatch)
    a_file = tmp_path / "somefile"
    a_file.write_text("x")
    for cache, why in (("/proc/coldseg-test-nope", "cannot be created"), (a_file, "exists and is not a folder"),
                       (a_file / "sub", "cannot be created")):
        for cmd in (["select", pool, "--budget", "3"], ["embed", pool]):
            code, _, err = cli(*cmd, "--out", tmp_path / "out", "--cache-dir", cache, "--quiet")
            assert_failed(code, err, f"cache folder '{cache}' cannot be used: it {why}", "--cache-dir")
            assert "Errno" not in err
    assert not (tmp_path / "out").exists() and a_file.read_text() == "x"


def test_dataset_root_is_refused_by_select_and_embed(tmp_path, make_pool, cli, monkeypatch):
    ds = tmp_path / "ds"
    make_pool(ds / "images", 6)
    make_pool(ds / "masks", 6, seed=1)
    no_training(monkeypatch)
    for cmd in (["select", ds, "--budget", "3"], ["embed", ds]):
        code, _, err = cli(*cmd, "--out", tmp_path / "out", "--image-size", "32", "--quiet")
        assert_failed(code, err, "holds an 'images' and a 'masks' folder", f"pass '{ds / 'images'}' as IMAGES_DIR")
        assert not (tmp_path / "out").exists()


def test_interrupt_message_suggests_resume_only_where_training_runs(tmp_path, cli, monkeypatch):
    """Ctrl-C: exit 130 and one line; --resume is suggested only when a MoCo training could have run."""
    import coldseg.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(coldseg.cli.COMMANDS, "select", interrupted)
    monkeypatch.setitem(coldseg.cli.COMMANDS, "embed", interrupted)
    feats = tmp_path / "f.npy"
    code, _, err = cli("select", tmp_path, "--budget", "2", "--out", tmp_path / "o", "--features", feats)
    assert code == coldseg.cli.EXIT_INTERRUPTED == 130
    assert "interrupted" in err and "--resume" not in err and "Rerun the same command" in err
    for cmd in (["select", tmp_path, "--budget", "2", "--out", tmp_path / "o"], ["embed", tmp_path, "--out", tmp_path / "o"]):
        code, _, err = cli(*cmd)
        assert code == 130 and "Rerun with --resume" in err and err.count("\n") == 1


def test_training_options_with_features_are_named_as_ignored(tmp_path, monkeypatch):
    """--features replaces the training: --epochs, --feature-layer, ... given beside it are named, once."""
    import warnings

    import coldseg.cli as cli_mod

    parse = cli_mod.build_parser().parse_args
    base = ["select", str(tmp_path), "--budget", "2", "--out", str(tmp_path / "o"), "--features", "f.npy"]
    with pytest.warns(UserWarning, match=r"--epochs, --feature-layer shape the MoCo training"):
        cli_mod._warn_unused_training(parse(base + ["--epochs", "5", "--feature-layer", "head"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cli_mod._warn_unused_training(parse(base + ["--seed", "3", "--image-size", "64"]))   # these still matter
        cli_mod._warn_unused_training(parse(base[:-2] + ["--epochs", "5"]))                    # no --features


def test_library_entry_points_refuse_an_unusable_device_before_reading(tmp_path, make_pool, monkeypatch):
    """The check sits where the device is resolved (session, pick_device), so the API and direct callers of
    the training get it too, not only the command line."""
    import coldseg
    from coldseg.features.train import pick_device

    pool = tmp_path / "pool"
    make_pool(pool, 6)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    no_reading(monkeypatch)
    for call in (lambda: coldseg.select(pool, 3, out=tmp_path / "o", device="gpu", progress=False),
                 lambda: coldseg.embed(pool, tmp_path / "o", device="cuda", progress=False),
                 lambda: pick_device("mps")):
        with pytest.raises(ValueError, match=r"^device (gpu|cuda|mps): "):
            call()
    assert not (tmp_path / "o").exists()
    assert pick_device("cpu").type == "cpu" and pick_device(None).type == "cpu"
