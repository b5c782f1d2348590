"""Shared fixtures for the integration tests: a tiny synthetic pool, tiny MoCo settings, real data.

The synthetic pool has three visually distinct kinds of picture (red horizontal stripes, a green
checkerboard, a blue disk on yellow), each drawn with its own seeded jitter so that no two files are
byte-identical. Every test passes its own cache folder, so nothing ever touches ~/.cache.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coldseg.features.train import MocoConfig

KINDS = ("stripes", "checker", "disk")

#: the report module is written separately; tests that need report.html skip until it exists
HAS_REPORT = importlib.util.find_spec("coldseg.report.html") is not None


def draw(kind: str, rng: np.random.Generator, size: tuple[int, int] = (40, 40)) -> np.ndarray:
    """One (H, W, 3) uint8 picture of ``kind`` with random phase, period and noise."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    period = int(rng.integers(4, 9))
    phase = int(rng.integers(0, period))
    img = np.zeros((h, w, 3), np.float64)
    if kind == "stripes":  # red / dark horizontal stripes
        on = ((yy + phase) // (period // 2 or 1)) % 2 == 0
        img[on] = (220, 30, 30)
        img[~on] = (40, 10, 10)
    elif kind == "checker":  # green / white checkerboard
        on = (((yy + phase) // period) + ((xx + phase) // period)) % 2 == 0
        img[on] = (20, 200, 40)
        img[~on] = (235, 235, 235)
    elif kind == "disk":  # blue disk on yellow
        cy, cx = rng.uniform(0.35, 0.65, 2) * (h, w)
        r = rng.uniform(0.2, 0.35) * min(h, w)
        on = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img[on] = (30, 40, 210)
        img[~on] = (240, 220, 40)
    else:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def write_pool(root: Path, n: int = 24, *, seed: int = 0, size: tuple[int, int] = (40, 40),
               subfolder: bool = True) -> list[str]:
    """Write ``n`` images (kinds in turn; PNG, some JPEG, a third in ``sub/`` when ``subfolder``).

    Returns the ids (relative posix paths), sorted, as the pool should report them.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        ext = ".jpg" if i % 4 == 3 else ".png"
        rel = f"{kind}_{i:03d}{ext}"
        if subfolder and i % 3 == 1:
            rel = f"sub/{rel}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(draw(kind, rng, size))
        if ext == ".jpg":
            im.save(path, quality=95)
        else:
            im.save(path)
        ids.append(rel)
    return sorted(ids)


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    """A folder of 24 small synthetic images, 3 kinds, PNG and JPEG, some in a subfolder."""
    root = tmp_path / "pool"
    write_pool(root, 24)
    return root


@pytest.fixture
def make_pool():
    """The pool writer itself, for tests that need their own layout."""
    return write_pool


@pytest.fixture
def tiny_moco() -> MocoConfig:
    """MoCo settings small enough for a 2-core CPU: 32 px, 2 epochs (no minimum step count), width-8 ResNet-18."""
    return MocoConfig(image_size=32, epochs=2, batch_size=8, width=8, eval_images=32, candidates=TINY_CANDIDATES,
                      min_steps=0)


#: two eq. 7 candidates that apply to colour and grayscale pools alike (scoring all 8 costs seconds)
TINY_CANDIDATES = "crop,blur"


@pytest.fixture
def cli(capsys):
    """Run ``coldseg ...`` in-process: returns (exit code, stdout, stderr)."""
    from coldseg.cli import main

    def run(*args) -> tuple[int, str, str]:
        capsys.readouterr()  # drop earlier output
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse usage errors
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def tiny_cli(monkeypatch, tiny_moco):
    """Make the CLI train the tiny width-8 encoder (the CLI has no --width flag); image size, epochs and
    batch size and feature layer still come from the command line. Returns the config the CLI will build for given flags."""
    import coldseg.cli

    def moco(args):
        return dataclasses.replace(tiny_moco, image_size=args.image_size, epochs=args.epochs,
                                   batch_size=args.batch_size, feature_layer=args.feature_layer)

    monkeypatch.setattr(coldseg.cli, "_moco", moco)
    return tiny_moco


def error_lines(err: str) -> list[str]:
    """The 'coldseg: error: ...' lines of a stderr capture."""
    return [ln for ln in err.splitlines() if ln.startswith("coldseg: error:")]


def snapshot(folder: Path) -> dict[str, bytes] | None:
    """Every file below ``folder`` (relative path -> bytes); None when the folder does not exist."""
    folder = Path(folder)
    if not folder.exists():
        return None
    if folder.is_file():
        return {"": folder.read_bytes()}
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch) -> Path:
    """COLDSEG_CACHE_DIR points into the test's tmp_path for every test, so that no test, even one
    that forgets ``cache_dir=``, reads or writes ~/.cache/coldseg."""
    d = tmp_path / "cache"
    monkeypatch.setenv("COLDSEG_CACHE_DIR", str(d))
    return d


@pytest.fixture
def cache_dir(_isolated_cache: Path) -> Path:
    """The per-test features cache folder (tmp_path / "cache"; may not exist yet)."""
    return _isolated_cache


@pytest.fixture
def one_torch_thread():
    """Tiny models run faster on one thread than on two contended ones (2-core box shared with other
    work). Opt in per module: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout; skips when it is absent."""
    path = (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"../shared/data not found (looked in {path})")
    return path


def side_for(X) -> dict[str, np.ndarray]:
    """Stand-in per-image side arrays for selectors that read them (``Selector.needs``): a "confidence"
    made from the rank of each row's sum, so it follows the rows through scaling, duplication and
    permutation as a real one would."""
    try:
        A = np.asarray(X, dtype=np.float64)
        with np.errstate(all="ignore"):
            s = A.reshape(A.shape[0], -1).sum(axis=1)
    except (ValueError, TypeError, IndexError):
        return {}
    if not np.isfinite(s).all():
        return {"confidence": np.zeros(len(s))}   # a test of bad features: they fail before this is read
    ranks = np.unique(s, return_inverse=True)[1].astype(np.float64)
    return {"confidence": (ranks + 1) / (ranks.max() + 2)}


def pick(selector, X, budget, **kw):
    """``selector.select(X, budget, **kw)``, with stand-in side arrays where the strategy needs them."""
    return selector.select(X, budget, side=side_for(X) if selector.needs else None, **kw)
