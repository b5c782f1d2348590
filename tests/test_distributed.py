"""Two CPU processes (gloo) started by torchrun: `coldseg select` gives complete, consistent outputs,
every rank ends with the same queue and model, and a distributed run resumes bit-identically.

One torchrun launch (about 15-25 s on 2 cores) runs this file as a script in both processes (see
``_worker``): first the resume check through the library, then `coldseg select` through the CLI.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="this torch build has no gloo backend for torch.distributed")

N_FILES = 31          # 29 distinct readable images + 1 duplicate + 1 broken file
N_POOL = 29           # -> shards of 15 and 14 rows: the gather pads
BATCH, EPOCHS = 8, 2  # 3 steps per epoch, 4 rows per rank per step
BUDGET = 5


def _tiny_cfg(image_size: int = 32, epochs: int = EPOCHS, batch_size: int = BATCH):
    from coldseg.features.train import MocoConfig

    return MocoConfig(image_size=image_size, epochs=epochs, batch_size=batch_size, width=8, eval_images=32,
                      candidates="crop,blur", min_steps=0)


def _sha(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _digest(model) -> dict:
    return {"queue": _sha([model.queue]), "queue_ptr": int(model.queue_ptr),
            "encoder_q": _sha(model.encoder_q.parameters()), "encoder_k": _sha(model.encoder_k.parameters()),
            "buffers": _sha(b for n, b in model.named_buffers() if "running" in n),
            "confidence": _sha([model.confidence_sum, model.confidence_count]),
            "confidence_terms": float(model.confidence_count.sum())}


# --- the process side (run by torchrun) --------------------------------------------------------------
def _worker(argv: list[str]) -> int:
    import coldseg.cli
    import coldseg.features.embed as embed
    from coldseg.data.pool import load_pool
    from coldseg.features.distributed import session
    from coldseg.features.train import train_moco

    work, pool_dir, cli_args = Path(argv[0]), Path(argv[1]), argv[2:]
    with session("cpu") as (info, dev):
        rank = info.rank
        report: dict = {"rank": rank, "world_size": info.world_size, "backend": info.backend}
        # 1. resume: 2 epochs uninterrupted == 1 epoch, checkpoint, resume (on every rank)
        images = load_pool(pool_dir, 32, progress=False).images[:16]
        cfg = dataclasses.replace(_tiny_cfg(), select_at=0.5)
        full, full_log = train_moco(images, cfg, seed=5, progress=False, dist=info)
        ckpt = work / "resume.pt"
        train_moco(images, cfg, seed=5, checkpoint=ckpt, progress=False, stop_after_epoch=1, dist=info)
        st = torch.load(ckpt, weights_only=False)
        report["checkpoint"] = {"epoch": st["epoch"], "world_size": st["world_size"],
                                "g_aug_ranks": len(st["g_aug_ranks"])}
        resumed, log = train_moco(images, cfg, seed=5, checkpoint=ckpt, resume=True, progress=False, dist=info)
        report["resume_equal"] = all(torch.equal(a, b) for a, b in
                                     zip(full.state_dict().values(), resumed.state_dict().values()))
        report["resume_losses_equal"] = log["loss"] == full_log["loss"]
        report["resume_digest"] = _digest(resumed)

        # 2. `coldseg select` with the tiny encoder; record each rank's trained model
        real_train = embed.train_moco

        def spy(*a, **k):
            model, log = real_train(*a, **k)
            report["trainings"] = report.get("trainings", 0) + 1
            report["select_digest"] = _digest(model)
            if rank == 0:
                torch.save(model.state_dict(), work / "model.pt")
            return model, log

        embed.train_moco = spy
        coldseg.cli._moco = lambda args: dataclasses.replace(_tiny_cfg(args.image_size, args.epochs, args.batch_size),
                                                             feature_layer=args.feature_layer)
        code = coldseg.cli.main(cli_args)
        # 3. another layer of the same training: every rank loads the cached encoder and embeds its shard
        if code == 0:
            code = coldseg.cli.main([*cli_args, "--feature-layer", "multiscale", "--out", str(work / "multiscale")])
        (work / f"rank{rank}.json").write_text(json.dumps(report))
    return code


# --- the test side -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    from conftest import write_pool

    tmp = tmp_path_factory.mktemp("dist")
    pool = tmp / "pool"
    ids = write_pool(pool, N_FILES - 2, size=(36, 36))
    shutil.copy(pool / ids[0], pool / "zz_copy.png")           # byte-identical duplicate
    (pool / "broken.png").write_bytes(b"not an image")
    work, out, cache = tmp / "work", tmp / "out", tmp / "cache"
    work.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(work), str(pool),
           "select", str(pool), "--budget", str(BUDGET), "--out", str(out), "--image-size", "32",
           "--epochs", str(EPOCHS), "--min-steps", "0", "--batch-size", str(BATCH), "--cache-dir", str(cache), "--quiet",
           "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLDSEG_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    ranks = [json.loads((work / f"rank{i}.json").read_text()) for i in range(2)]
    return {"pool": pool, "ids": sorted(ids), "out": out, "cache": cache, "work": work, "ranks": ranks,
            "stdout": r.stdout, "stderr": r.stderr}


def test_outputs_complete(launched):
    out = launched["out"]
    X = np.load(out / "features.npy")
    assert X.shape == (N_POOL, 64) and X.dtype == np.float32   # pooled backbone of the width-8 ResNet-18
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert (out / "feature_ids.txt").read_text().splitlines() == launched["ids"]
    rows = (out / "selection.csv").read_text().splitlines()[1:]
    picked = [r.split(",")[1] for r in rows]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, BUDGET + 1))
    assert len(set(picked)) == BUDGET and set(picked) <= set(launched["ids"])
    man = json.loads((out / "manifest.json").read_text())
    assert man["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert man["budget"] == BUDGET and man["pool"]["size"] == N_POOL
    assert [s["id"] for s in man["pool"]["skipped"]] == ["broken.png"]
    assert man["pool"]["duplicates"] == [{"id": "zz_copy.png", "same_as": launched["ids"][0]}]
    assert man["features"]["source"] == "moco" and len(man["features"]["training"]["loss_per_epoch"]) == EPOCHS
    assert sorted(man["files"]) == sorted(p.name for p in out.iterdir())
    # rank 0 alone reported, and the features were cached under the 2-process key, checkpoint dropped
    assert launched["stdout"].count(f"picked {BUDGET} of {N_POOL} images with 'herding' -> {out}\n") == 1
    (entry,) = [p for p in launched["cache"].iterdir() if p.name != "decoded"]
    assert np.array_equal(np.load(entry / "features.npy"), X) and not (entry / "checkpoint.pt").exists()


def test_same_files_and_selection_as_one_process_on_these_features(launched, tmp_path, cli):
    one = tmp_path / "one"
    code, _, err = cli("select", launched["pool"], "--budget", BUDGET, "--out", one, "--features",
                       launched["out"] / "features.npy", "--no-report", "--quiet", "--cache-dir", tmp_path / "c")
    assert code == 0, err
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in launched["out"].iterdir())
    assert (one / "selection.csv").read_bytes() == (launched["out"] / "selection.csv").read_bytes()
    assert json.loads((one / "manifest.json").read_text())["distributed"] == {"world_size": 1, "backend": None}


def test_every_rank_holds_the_same_queue_and_model(launched):
    r0, r1 = launched["ranks"]
    assert (r0["world_size"], r0["backend"], r1["rank"]) == (2, "gloo", 1)
    assert r0["select_digest"] == r1["select_digest"]
    # 2 epochs × 3 steps × 8 keys = 48 keys into a queue of K = max(8, min(4096, 29 // 2)) = 14 slots
    assert r0["select_digest"]["queue_ptr"] == 48 % 14
    # the per-image confidence tally is summed over the ranks: one term per query, 48 in all, on both
    assert r0["select_digest"]["confidence_terms"] == 48


def test_distributed_resume_is_bit_identical(launched):
    for r in launched["ranks"]:
        assert r["checkpoint"] == {"epoch": 1, "world_size": 2, "g_aug_ranks": 2}
        assert r["resume_equal"] and r["resume_losses_equal"]
    assert launched["ranks"][0]["resume_digest"] == launched["ranks"][1]["resume_digest"]


def test_features_equal_one_process_embedding_of_the_trained_model(launched):
    from coldseg.data.pool import load_pool
    from coldseg.features.embed import embed_images
    from coldseg.features.train import build_model

    model = build_model(_tiny_cfg(), N_POOL, torch.Generator().manual_seed(0))
    model.load_state_dict(torch.load(launched["work"] / "model.pt", weights_only=True))
    images = load_pool(launched["pool"], 32, progress=False).images
    X1 = embed_images(model, images)
    X2 = np.load(launched["out"] / "features.npy")
    # bit-identical on the 2-core reference machine; a tolerance in case a CPU's convolution kernels
    # depend on the batch size (rank slices of 15 and 14 rows against one batch of 29)
    np.testing.assert_allclose(X2, X1, rtol=0, atol=1e-6)


def test_gather_rows_and_shards_in_one_process():
    from coldseg.features.distributed import DistInfo, shard

    assert [shard(29, DistInfo(r, 2))[:2] for r in range(2)] == [(0, 15), (15, 29)]
    assert shard(2, DistInfo(2, 3)) == (2, 2, [1, 1, 0])  # a rank may get nothing


def test_another_layer_reuses_the_distributed_training(launched):
    """The second `coldseg select` (--feature-layer multiscale) trained nothing on any rank, and its
    deepest stage block is the first run's backbone features (rows gathered from both ranks in order)."""
    assert [r["trainings"] for r in launched["ranks"]] == [1, 1]
    X = np.load(launched["out"] / "features.npy")                            # (n, 64) at width 8
    Z = np.load(launched["work"] / "multiscale" / "features.npy")            # (n, 8 + 16 + 32 + 64)
    assert Z.shape == (N_POOL, 120) and np.allclose(Z[:, -64:] * 2, X, atol=1e-5)
    man = json.loads((launched["work"] / "multiscale" / "manifest.json").read_text())
    assert man["features"]["layer"] == "multiscale" and man["features"]["feature_check"] is not None
    assert man["features"]["source"] == "cache"                          # the training came from the cache


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
