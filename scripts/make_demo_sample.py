"""Rebuild the bundled demo sample from ../shared/data/dubai_aerial (CC0 1.0).

Every third tile (sorted by id), downscaled to 128×128: JPEG images and 0/255 PNG building masks.
Usage: python scripts/make_demo_sample.py [SRC] [DST]
"""
import sys
from pathlib import Path

from PIL import Image

src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/dubai_aerial")
dst = Path(sys.argv[2] if len(sys.argv) > 2 else "examples/dubai_sample")
(dst / "images").mkdir(parents=True, exist_ok=True)
(dst / "masks").mkdir(parents=True, exist_ok=True)
ids = sorted(p.stem for p in (src / "images").glob("*.jpg"))[::3]
for i in ids:
    Image.open(src / "images" / f"{i}.jpg").convert("RGB").resize((128, 128), Image.BILINEAR).save(
        dst / "images" / f"{i}.jpg", quality=88)
    Image.open(src / "masks" / f"{i}.png").convert("L").resize((128, 128), Image.NEAREST).save(
        dst / "masks" / f"{i}.png", optimize=True)
print(f"wrote {len(ids)} tiles to {dst}")
