"""Does MoCo's crop scale decide whether the features carry foreground size? (label-based diagnostic)

Trains one MoCo encoder on the benchmark's validation pool of a dataset (64 px, batch 32, the
benchmark folders' schedule) with random crops of ``CROP_LO``-100 % of the image, then prints one JSON
line: the cross-validated R^2 of each image's foreground fraction from the head and backbone features
(:func:`coldseg.bench.causes.encoded_r2`), the feature check (view_top1, knn_overlap), seconds.

    python benchmarks/crop_scale_size.py NAME CROP_LO SEED [DATASET]     # DATASET under ../shared/data
    python benchmarks/crop_scale_size.py crop08 0.8 0 kvasir_seg

Reads masks (never Dice): a diagnostic of the features, not a way to choose a selector.
SMOKE=1 trains one epoch (a quick check that it runs). Features go to /tmp/fs/.
"""
import json, sys, time
import numpy as np, torch
from coldseg.bench.causes import encoded_r2
from coldseg.bench.sweep import BenchmarkConfig, evaluation_split
from coldseg.data.pairs import load_pairs
from coldseg.data.stream import PixelSource
from coldseg.features.augment import AugmentConfig
from coldseg.features.embed import embed_images
from coldseg.features.train import MocoConfig, train_moco
from coldseg.features.quality import feature_check
torch.set_num_threads(1)
name, lo, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ds = sys.argv[4] if len(sys.argv) > 4 else "kvasir_seg"
from pathlib import Path
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pairs = load_pairs(DATA / ds, 64, progress=False)
cfg0 = BenchmarkConfig(DATA / ds, "-", [], [], [], image_size=64, evaluate_on="validation")
pool_idx, _ = evaluation_split(cfg0, pairs.ids, pairs.groups)
imgs = np.ascontiguousarray(pairs.images[pool_idx])
fg = (pairs.masks[pool_idx] > 0).reshape(len(pool_idx), -1).mean(1)
import os
epochs, min_steps = (50, 0) if ds == "kvasir_seg" else (30, 1500)
if os.environ.get("SMOKE"): epochs, min_steps = 1, 0
cfg = MocoConfig(image_size=64, epochs=epochs, batch_size=32, min_steps=min_steps, augment=AugmentConfig(crop_scale=(lo, 1.0)))
dev = torch.device("cpu")
t = time.time()
src = PixelSource(imgs, dev, None)
model, log = train_moco(src, cfg, seed=seed, device=dev, progress=False)
out = {"name": name, "dataset": ds, "crop_lo": lo, "seed": seed, "seconds": round(time.time() - t), "final_loss": round(log["loss"][-1], 3),
       "eq7": (log.get("augmentation") or {}).get("winner")}
for layer in ("head", "backbone"):
    F = embed_images(model, src, layer=layer, device=dev)
    Path("/tmp/fs").mkdir(exist_ok=True)
    np.save(f"/tmp/fs/feat_{ds}_{name}_{layer}_s{seed}.npy", F)
    out[f"r2_fg_{layer}"] = round(encoded_r2(F, fg), 3)
fc = feature_check(model, imgs, cfg, seed=seed, device=dev)
out["view_top1"], out["knn_overlap"] = fc["view_top1"], fc["knn_overlap"]
print(json.dumps(out), flush=True)
