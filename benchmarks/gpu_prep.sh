#!/usr/bin/env bash
# Prepare a GPU session (no device time): the wheels the lent machine lacks, and a dataset copy small
# enough to travel with the checkout (64 MiB in all), then print the device command.
#   bash benchmarks/gpu_prep.sh [DATASET (isic2017)] [MAX_SIDE (256)]
# - .whl/: monai, kornia and kornia_rs at this venv's versions, for the device's CPython 3.12 (its image
#   has torch, numpy, scikit-learn, pillow, matplotlib, tqdm; faiss is optional and not carried);
# - .gpudata/DATASET/{images,masks}: ../shared/data/DATASET with every image shrunk so its longer side is
#   at most MAX_SIDE (images: Lanczos, masks: nearest, same names and formats). The benchmark resizes to
#   --image-size (128) anyway; the copy only has to stay above it.
# Both folders are git-ignored. Run from the repository root.
set -euo pipefail
DS=${1:-isic2017}; SIDE=${2:-256}
SHARED=${SHARED:-../shared/data}
PY=${PY:-.venv/bin/python}
[[ -d $SHARED/$DS/images && -d $SHARED/$DS/masks ]] || { echo "no $SHARED/$DS/images and masks" >&2; exit 2; }
ver() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  "monai==$(ver monai)" "kornia==$(ver kornia)" "kornia_rs==$(ver kornia_rs)"
rm -rf ".gpudata/$DS" && mkdir -p ".gpudata/$DS"
$PY - "$SHARED/$DS" ".gpudata/$DS" "$SIDE" <<'EOF'
import shutil
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

src, dst, side = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for sub, resample in (("images", Image.LANCZOS), ("masks", Image.NEAREST)):
    files = sorted(p for p in (src / sub).rglob("*") if p.is_file() and not p.name.startswith("."))
    for f in tqdm(files, desc=sub, unit="file"):
        out = dst / sub / f.relative_to(src / sub)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as im:
            scale = side / max(im.size)
            if scale >= 1:                      # small enough: the original bytes, not a re-encoding
                shutil.copy2(f, out)
                continue
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
            im.save(out, **({"quality": 95} if f.suffix.lower() in (".jpg", ".jpeg") else {}))
EOF
du -sh .whl ".gpudata/$DS"
total=$(( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) + $(du -sb .whl | cut -f1) + $(du -sb .gpudata | cut -f1) ))
echo "travels: $((total / 1048576)) MiB (tracked files + .whl + .gpudata; the limit is 64 MiB)"
if (( total > 64 * 1048576 )); then echo "too large: rerun with a smaller MAX_SIDE or remove other .gpudata folders" >&2; exit 1; fi
cat <<EOF
Device command (run tool, carry [".whl", ".gpudata"], timeout_s 600):
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; bash benchmarks/gpu_session.sh .gpudata/$DS \$OUT 540
EOF
