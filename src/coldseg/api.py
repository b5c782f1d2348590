"""The Python API: ``coldseg.select`` and ``coldseg.embed`` mirror the CLI commands."""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from coldseg import __version__
from coldseg.data.decoded import load_pool_cached
from coldseg.data.pool import Pool, load_pool
from coldseg.data.stream import LoaderConfig
from coldseg.features.distributed import DistInfo, on_main, session
from coldseg.features.external import load_features
from coldseg.features.train import MocoConfig, summarize_log
from coldseg.io.outputs import OutputDir
from coldseg.select.base import Selection
from coldseg.select.registry import check_strategy, get_selector

#: ``coldseg select``'s strategy when none is named: kernel herding (greedy MMD; picks distributed
#: like the pool). Chosen 2026-11-29 by a rule fixed before the runs: pooled over two sets of MoCo
#: encoders on the kvasir_seg and isic2017 validation splits (carved from the pools; 5/10/20 %), its
#: gain over random beat the former default, ``kmedian`` (2026-11-27 to 2026-11-29), by 0.63 points,
#: with no ratio resolvably below random; docs/results.md ("fourteenth session") has the tables.
DEFAULT_STRATEGY = "herding"


@dataclass
class SelectResult:
    """What ``select`` returns: the annotation list and everything written beside it."""

    ids: list[str]                  # picked image ids, in annotation order
    paths: list[Path]               # their files
    selection: Selection
    manifest: dict[str, Any]
    features: np.ndarray = field(repr=False)
    pool: Pool = field(repr=False)
    files: list[str] = field(default_factory=list)


def parse_budget(budget: int | str, n: int) -> int:
    """'N' or 'P%' -> number of images; errors name the value and the pool size."""
    text = str(budget).strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not math.isfinite(pct) or pct <= 0:
                raise ValueError
            value = max(1, int(math.floor(pct * n / 100 + 0.5)))
            if pct > 100:
                value = int(math.ceil(pct * n / 100))
        else:
            f = float(text)
            if not f.is_integer():
                raise ValueError
            value = int(f)
    except ValueError:
        raise ValueError(f"budget {text!r} is not a positive number of images (e.g. 50) or a percentage "
                         "(e.g. 10%)") from None
    if value <= 0:
        raise ValueError(f"budget={text} must be at least 1 image")
    if value > n:
        raise ValueError(f"budget={text} ({value} images) exceeds the pool of {n} readable, distinct images; "
                         "lower the budget")
    return value


def _versions() -> dict[str, str]:
    import kornia
    import monai
    import sklearn
    import torch

    return {"coldseg": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "monai": monai.__version__,
            "kornia": kornia.__version__}


def _device_name(dev) -> str:
    import torch

    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    kernels = torch.backends.cpu.get_cpu_capability()
    return f"cpu ({_cpu_model()}, {kernels} kernels, {torch.get_num_threads()} threads)"


def _cpu_model() -> str:
    """The processor's marketing name (Linux /proc/cpuinfo), else what :mod:`platform` knows.

    With the kernel level and thread count beside it this says which float arithmetic a CPU run used:
    MoCo training gives bit-identical features only when all three match (docs/reliability.md)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_cache_dir(cache_dir: str | Path | None) -> Path:
    """The features cache folder (``cache_dir``, else the default), created now, so that a path that
    cannot be a writable folder fails before any image is read, naming it."""
    from coldseg.features.embed import default_cache_dir

    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    why = ""
    if d.exists() and not d.is_dir():
        why = "it exists and is not a folder"
    else:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            why = f"it cannot be created ({e.strerror or e})"
        else:
            if not os.access(d, os.W_OK | os.X_OK):
                why = "it is not writable"
    if why:
        raise ValueError(f"cache folder {str(d)!r} cannot be used: {why}; pass a writable folder with "
                         "--cache-dir (or $COLDSEG_CACHE_DIR)")
    return d


def _load_pool(images_dir: str | Path, image_size: int, *, cache_dir, progress: bool, dinfo: DistInfo,
               decoded_cache: bool = True) -> Pool:
    """The pool. With ``decoded_cache`` its pixels are decoded once into the cache and memory-mapped
    (coldseg.data.decoded), else read into memory (given features: nothing is cached). Under torchrun
    rank 0 reads the folder and the other ranks open the same decoded file (or get no pixels)."""
    from coldseg.features.embed import default_cache_dir

    def read() -> Pool:
        if not decoded_cache:
            return load_pool(images_dir, image_size, progress=progress)
        return load_pool_cached(images_dir, image_size, progress=progress,
                                cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir())

    if not dinfo.active:
        return read()
    mine: list[Pool] = []

    def shell() -> tuple[Pool, str | None]:
        mine.append(read())
        return dataclasses.replace(mine[0], images=None), getattr(mine[0].images, "filename", None)

    pool, path = on_main(shell, dinfo)  # no pixels in the broadcast
    if mine:
        return mine[0]
    return dataclasses.replace(pool, images=np.load(path, mmap_mode="r") if path else None)


def _features(pool: Pool, features: str | Path | np.ndarray | None, cfg: MocoConfig, *, seed: int, dev,
              cache_dir, resume: bool, progress: bool, loader: LoaderConfig | None = None,
              dinfo: DistInfo | None = None,
              need_confidence: bool = False) -> tuple[np.ndarray, dict[str, Any], dict[str, np.ndarray]]:
    """(features, their manifest entry, per-image side arrays for selectors that need them)."""
    if features is not None:
        if isinstance(features, (str, Path)):
            X = load_features(features, pool.ids)
            return X, {"source": "file", "file": str(Path(features).resolve()), "dim": int(X.shape[1])}, {}
        from coldseg.features.external import to_float32

        X = to_float32(features, "the features array")
        if X.ndim != 2 or X.shape[0] != len(pool):
            raise ValueError(f"features array must be (n_images={len(pool)}, d); got shape {X.shape}")
        return X, {"source": "array", "dim": int(X.shape[1])}, {}
    from coldseg.features.embed import compute_features

    X, info = compute_features(pool.images, seed=seed, settings=cfg, device=dev, cache_dir=cache_dir,
                               content_key=pool.content_key(), ids=pool.ids, grayscale=pool.grayscale,
                               resume=resume, progress=progress, loader=loader, dist=dinfo,
                               need_confidence=need_confidence)
    log = info["log"]
    side = {} if info.get("confidence") is None else {"confidence": info["confidence"]}
    return X, {"source": "moco" if info["trained"] else "cache", "cache_key": info["cache_key"],
               "cache_dir": info["cache_dir"], "dim": int(X.shape[1]), "layer": cfg.feature_layer,
               "training": summarize_log(log), "augmentation": log.get("augmentation"),
               "feature_check": info.get("feature_check"), "settings": cfg.to_dict()}, side


def _pool_manifest(pool: Pool) -> dict[str, Any]:
    return {"root": str(pool.root.resolve()), "size": len(pool), "grayscale": pool.grayscale,
            "skipped": pool.skipped, "duplicates": pool.duplicates, "ignored_non_image_files": pool.ignored,
            "hidden_left_out": getattr(pool, "hidden", 0),
            "folder_links_not_followed": getattr(pool, "unfollowed", []),
            "multi_frame_first_frame_used": getattr(pool, "multi_frame", []),
            "earlier_coldseg_outputs_left_out": getattr(pool, "outputs", [])}


def labelstudio_tasks(ids: list[str], paths: list[Path], sel: Selection, url_prefix: str | None) -> list[dict]:
    """Label Studio tasks. Without a prefix the image is served by Label Studio's local-files storage
    (``/data/local-files/?d=<absolute path without the leading slash>``, document root '/'). With one,
    the URL is the prefix, a '/' unless the prefix already ends with '/', '=' or '?', and the quoted id."""
    tasks = []
    if url_prefix and not url_prefix.endswith(("/", "=", "?")):
        url_prefix += "/"
    for r, (i, p) in enumerate(zip(ids, paths)):
        if url_prefix:
            url = url_prefix + urllib.parse.quote(i)
        else:
            url = "/data/local-files/?d=" + urllib.parse.quote(str(p.resolve()).lstrip("/"))
        tasks.append({"data": {"image": url, "coldseg_id": i, "rank": r + 1,
                               "cluster": int(sel.clusters[r])}})
    return tasks


def select(images_dir: str | Path, budget: int | str, *, out: str | Path | None = None,
           strategy: str = DEFAULT_STRATEGY, seed: int = 0, image_size: int = 128, epochs: int = 30,
           batch_size: int = 32, min_steps: int = 3000, features: str | Path | np.ndarray | None = None,
           resume: bool = False,
           device: str | None = None, cache_dir: str | Path | None = None, report: bool = True,
           url_prefix: str | None = None, strategy_params: dict[str, Any] | None = None,
           moco: MocoConfig | None = None, progress: bool = True,
           loader: LoaderConfig | None = None) -> SelectResult | None:
    """Pick ``budget`` images of ``images_dir`` to annotate; write the outputs into ``out`` if given.

    budget: a number of images (50) or a percentage of the readable pool ("10%").
    features: a features file or (n, d) array to use instead of training MoCo.
    moco: full MoCo settings; when given, its ``image_size``, ``epochs``, ``batch_size`` and ``min_steps``
    are used (the pool is read at ``moco.image_size``) and the four plain arguments are ignored.
    loader: how pixels reach the encoder (whole pool on the device or streamed; speed and memory only).
    Raises ValueError (PoolError, FeaturesError) for bad input and OutputError when ``out`` cannot be
    written; in both cases nothing is left in ``out``.

    Under ``torchrun`` (WORLD_SIZE > 1) every process calls this: all train and embed their shares
    (coldseg.features.distributed); rank 0 selects, writes ``out`` and returns the result, the other
    ranks return None.
    """
    with session(device) as (dinfo, dev):    # an unusable device fails here, before anything is read
        return _select(images_dir, budget, out=out, strategy=strategy, seed=seed, image_size=image_size,
                       epochs=epochs, batch_size=batch_size, min_steps=min_steps, features=features,
                       resume=resume, cache_dir=cache_dir, report=report, url_prefix=url_prefix,
                       strategy_params=strategy_params, moco=moco, progress=progress, loader=loader,
                       dinfo=dinfo, dev=dev)


def check_out_outside(images_dir: str | Path, out: str | Path | None) -> None:
    """Refuse an output folder equal to or inside the images folder: the input is never modified."""
    if out is None:
        return
    src, dst = Path(images_dir).resolve(), Path(out).resolve()
    if dst == src or src in dst.parents:
        raise ValueError(f"output folder {str(out)!r} lies inside the images folder {str(images_dir)!r}; "
                         "coldseg never writes into its input: choose a folder outside it")


def _select(images_dir, budget, *, out, strategy, seed, image_size, epochs, batch_size, min_steps, features, resume,
            cache_dir, report, url_prefix, strategy_params, moco, progress, loader, dinfo: DistInfo,
            dev) -> SelectResult | None:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    selector = get_selector(strategy, **(strategy_params or {}))
    check_strategy(strategy, "strategy", **(strategy_params or {}))  # a bad setting fails now, not after training
    if features is not None and selector.needs:
        raise ValueError(f"strategy {strategy!r} reads {', '.join(selector.needs)} from coldseg's own MoCo "
                         "training, which features from a file or array do not have: drop --features or "
                         "choose another strategy")
    check_out_outside(images_dir, out)
    if features is None:
        check_cache_dir(cache_dir)
    if moco is not None:
        image_size = moco.image_size
    progress = progress and dinfo.is_main
    outdir = OutputDir(out) if out is not None and dinfo.is_main else None
    try:
        t = time.perf_counter()
        pool = _load_pool(images_dir, image_size, cache_dir=cache_dir, progress=progress, dinfo=dinfo,
                          decoded_cache=features is None)
        timings["read_images_s"] = time.perf_counter() - t
        m = parse_budget(budget, len(pool))
        cfg = moco or MocoConfig(image_size=image_size, epochs=epochs, batch_size=batch_size,
                                 min_steps=min_steps)
        t = time.perf_counter()
        X, finfo, side = _features(pool, features, cfg, seed=seed, dev=dev, cache_dir=cache_dir, resume=resume,
                                   progress=progress, loader=loader, dinfo=dinfo,
                                   need_confidence="confidence" in selector.needs)
        timings["features_s"] = time.perf_counter() - t
        if not dinfo.is_main:
            return None  # rank 0 selects and writes
        t = time.perf_counter()
        sel = selector.select(X, m, random_state=seed, side=side)
        timings["select_s"] = time.perf_counter() - t
        ids = [pool.ids[i] for i in sel.indices]
        paths = [pool.path(i) for i in sel.indices]
        manifest = {
            "coldseg": __version__, "run_id": uuid.uuid4().hex,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv) if sys.argv and sys.argv[0].endswith("coldseg") else None,
            "strategy": strategy, "strategy_params": selector.get_params(), "budget": m,
            "budget_requested": str(budget), "seed": seed, "image_size": image_size,
            "device": _device_name(dev), "distributed": dinfo.manifest(), "pool": _pool_manifest(pool),
            "features": finfo, "augmentation": finfo.get("augmentation"),
            "selection": {"info": sel.info}, "versions": _versions(), "timings": timings,
        }
        if outdir is not None:
            with outdir.writing():  # a full disk or a permission error names the folder
                files = _write_outputs(outdir, pool, X, sel, ids, paths, manifest, report, url_prefix,
                                       timings, t_start)
        else:
            files = []
        timings["total_s"] = time.perf_counter() - t_start
        return SelectResult(ids, paths, sel, manifest, X, pool, files)
    except BaseException:
        if outdir is not None:
            outdir.abort()
        raise


def _write_outputs(outdir: OutputDir, pool: Pool, X: np.ndarray, sel: Selection, ids: list[str],
                   paths: list[Path], manifest: dict[str, Any], report: bool, url_prefix: str | None,
                   timings: dict[str, float], t_start: float) -> list[str]:
    rows = [[r + 1, i, str(p.resolve()), int(c), round(float(d), 6)]
            for r, (i, p, c, d) in enumerate(zip(ids, paths, sel.clusters, sel.distances))]
    outdir.write_csv("selection.csv", ["rank", "id", "path", "cluster", "distance_to_centroid"], rows)
    outdir.write_text("selected.txt", "".join(f"{p.resolve()}\n" for p in paths))
    outdir.write_json("labelstudio.json", labelstudio_tasks(ids, paths, sel, url_prefix))
    _write_features(outdir, X, pool.ids)
    if report:
        from coldseg.report.html import write_report

        t = time.perf_counter()
        write_report(outdir.stage, ids=pool.ids, images=pool.images, features=X, selection=sel,
                     manifest=manifest)
        timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    files = sorted(p.name for p in outdir.stage.iterdir()) + ["manifest.json"]
    manifest["files"] = files
    outdir.write_json("manifest.json", manifest)
    return outdir.commit()


def _write_features(outdir: OutputDir, X: np.ndarray, ids: list[str]) -> None:
    outdir.write_npy("features.npy", np.asarray(X, dtype=np.float32))
    outdir.write_text("feature_ids.txt", "".join(f"{i}\n" for i in ids))


def embed(images_dir: str | Path, out: str | Path, *, seed: int = 0, image_size: int = 128, epochs: int = 30,
          batch_size: int = 32, min_steps: int = 3000, resume: bool = False, device: str | None = None,
          cache_dir: str | Path | None = None, moco: MocoConfig | None = None,
          progress: bool = True, loader: LoaderConfig | None = None) -> np.ndarray | None:
    """Train MoCo on the pool and write only ``features.npy``, ``feature_ids.txt`` and ``manifest.json``.

    moco: full MoCo settings; when given, the pool is read at ``moco.image_size`` (as in :func:`select`).
    Under ``torchrun`` rank 0 writes and returns the features, the other ranks return None.
    """
    if moco is not None:
        image_size = moco.image_size
    check_out_outside(images_dir, out)
    check_cache_dir(cache_dir)
    with session(device) as (dinfo, dev):
        progress = progress and dinfo.is_main
        outdir = OutputDir(out) if dinfo.is_main else None
        try:
            pool = _load_pool(images_dir, image_size, cache_dir=cache_dir, progress=progress, dinfo=dinfo)
            cfg = moco or MocoConfig(image_size=image_size, epochs=epochs, batch_size=batch_size,
                                     min_steps=min_steps)
            X, finfo, _ = _features(pool, None, cfg, seed=seed, dev=dev, cache_dir=cache_dir, resume=resume,
                                    progress=progress, loader=loader, dinfo=dinfo)
            if outdir is None:
                return None
            with outdir.writing():
                _write_features(outdir, X, pool.ids)
            manifest = {"coldseg": __version__, "command": "embed", "seed": seed, "device": _device_name(dev),
                        "distributed": dinfo.manifest(), "pool": _pool_manifest(pool), "features": finfo,
                        "versions": _versions(), "files": ["feature_ids.txt", "features.npy", "manifest.json"]}
            outdir.write_json("manifest.json", manifest)
            outdir.commit()
            return X
        except BaseException:
            if outdir is not None:
                outdir.abort()
            raise
