"""The benchmark sweep: strategies × ratios × seeds, plus the full-label upper bound.

Flow (each step a function below):
  load_pairs (validates every file)  ->  pool_test_split (grouped, split_seed fixed for all runs)
  -> settings check (a folder never mixes settings)  ->  plan the runs not yet in results.csv
  -> jobs: one-shot selectors pick from the seed's cached features; ``full`` takes the whole pool;
     iterative strategies pick in rounds with U-Nets of their own
  -> final U-Net per run (run_jobs; GPU workers)  ->  one results.csv row per run, at once
  -> report.

Seeds: seed s seeds the features, the selection and the final training, so runs with the same seed
are paired across strategies. ``feature_seeds=F`` trains only F encoders and seed s selects from
encoder s % F (selection, random draw and training still follow s): more seeds for the cost of F MoCo
trainings. On a CPU with ``workers`` > 1, the encoders a sweep still needs are trained side by side in
that many worker processes (``cpu_count // workers`` torch threads each) before the selections,
instead of one after the other; each is the same training, cached the same way. Seeds that share an
encoder are not independent; ``scripts/ablation_table.py`` then also gives intervals over encoders.
The strategy kind (selector, iterative, full) is looked up in a table (``strategy_kinds``), never
switched on by name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from coldseg.bench import results as R
from coldseg.bench.features import FeaturesFn, cached_features, moco_features_fn, pixel_features
from coldseg.io.lock import folder_lock
from coldseg.io.outputs import remove_dead_temp_files

SETTINGS_VERSION = 1
#: SegConfig fields that cannot change a result (left out of the settings comparison)
_NOT_RESULTS = {"log_every"}


@dataclass
class BenchmarkConfig:
    data_dir: str | Path
    out_dir: str | Path
    strategies: Sequence[str]
    ratios: Sequence[float]
    seeds: Sequence[int]
    image_size: int = 128
    seg: Any = None                     # SegConfig; None -> SegConfig() (1500 steps, batch 32)
    test_fraction: float = 0.2
    split_seed: int = 0
    evaluate_on: str = "test"           # 'test' | 'validation': a split of the pool; the test set stays unread
    multiclass: bool = False
    masks_dir: str = "masks"
    rounds: int = 3                     # iterative strategies: rounds including the random first one
    features: str = "moco-backbone"     # 'moco-backbone' | 'moco' (head) | 'pixels' | a label for an injected features_fn
    ssl_epochs: int | None = None       # MoCo epochs (None: MocoConfig's default)
    ssl_batch_size: int | None = None   # MoCo batch (None: MocoConfig's default)
    ssl_min_steps: int | None = None    # MoCo minimum SGD steps (None: MocoConfig's default)
    ssl_candidates: str | None = None   # eq. 7 candidates: None/'auto' (MocoConfig's), 'none', or a comma list
    feature_seeds: int | None = None    # F: seed s selects from encoder s % F (None: every seed its own)
    feature_seed_offset: int = 0        # N: those encoders' seeds are N + s % F (a new set of F encoders)
    include_full: bool = True
    workers: int | None = None          # worker processes (see segment.runner.resolve_parallelism)
    stack: int | None = None            # models trained together in one process (CUDA default 8)
    device: str | None = None
    progress: bool = True
    command: str | None = None          # recorded in settings.json and shown in the report


@dataclass(frozen=True)
class Run:
    strategy: str
    ratio: float
    seed: int
    n_labeled: int

    @property
    def key(self) -> str:
        return f"{self.strategy}/{R.fmt_ratio(self.ratio)}%/seed{self.seed}"


@dataclass
class Outcome:
    out_dir: Path
    new_runs: int
    skipped_runs: int
    wall_seconds: float
    report: dict[str, Path] = field(default_factory=dict)


def strategy_kinds(names: Sequence[str]) -> dict[str, str]:
    """name -> 'selector' | 'iterative' | 'full'; unknown names raise, listing every valid one."""
    from coldseg.iterative import iterative_names
    from coldseg.select.registry import available, get_selector, parse_spec

    table = {n: "selector" for n in available()}
    table.update({n: "iterative" for n in iterative_names()})
    table[R.FULL] = "full"
    for n in names:                                 # selector specs with parameters, e.g. typiclust[k_nn=10]
        if n not in table and "[" in n and table.get(parse_spec(n)[0]) == "selector":
            get_selector(n)                         # a bad parameter fails here, before any data is read
            table[n] = "selector"
    bad = [n for n in names if n not in table]
    if bad:
        raise ValueError(f"unknown strategy name(s) {', '.join(map(repr, bad))}; choose from: "
                         f"{', '.join(sorted(table))}")
    return {n: table[n] for n in names}


def validate(cfg: BenchmarkConfig) -> None:
    """Everything checkable without reading the data; raises ValueError naming the bad value."""
    if not cfg.strategies:
        raise ValueError("no strategies given; pass e.g. --strategies random,ca")
    kinds = strategy_kinds(cfg.strategies)
    if cfg.features == "pixels":
        from coldseg.select.registry import get_selector

        for n in (n for n, k in kinds.items() if k == "selector"):
            if "confidence" in get_selector(n).needs:
                raise ValueError(f"strategy {n!r} reads MoCo's per-image confidence; it needs --features moco")
    for r in cfg.ratios:
        if not 0 < float(r) <= 100:
            raise ValueError(f"ratio {r} must be a percentage in (0, 100], e.g. 10")
    if not cfg.ratios:
        raise ValueError("no ratios given; pass e.g. --ratios 5,10,20")
    if not cfg.seeds:
        raise ValueError("no seeds given; pass e.g. --seeds 3")
    if cfg.rounds < 1:
        raise ValueError(f"rounds={cfg.rounds} must be at least 1")
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ValueError(f"test_fraction={cfg.test_fraction} must lie strictly between 0 and 1, e.g. 0.2")
    if cfg.workers is not None and cfg.workers < 1:
        raise ValueError(f"workers={cfg.workers} must be at least 1")
    if cfg.stack is not None and cfg.stack < 1:
        raise ValueError(f"stack={cfg.stack} must be at least 1")
    if cfg.workers is not None and cfg.stack is not None and cfg.workers > 1 and cfg.stack > 1:
        raise ValueError(f"workers={cfg.workers} and stack={cfg.stack}: choose worker processes or "
                         "stacked models, not both")
    if cfg.evaluate_on not in ("test", "validation"):
        raise ValueError(f"evaluate_on={cfg.evaluate_on!r} must be 'test' or 'validation'")
    if cfg.image_size < 8:
        raise ValueError(f"image_size={cfg.image_size} is too small; use at least 8 px")
    if cfg.feature_seeds is not None and cfg.feature_seeds < 1:
        raise ValueError(f"feature_seeds={cfg.feature_seeds} must be at least 1")
    if int(cfg.feature_seed_offset) < 0:
        raise ValueError(f"feature_seed_offset={cfg.feature_seed_offset} must be 0 or more")


def settings_of(cfg: BenchmarkConfig, seg: Any, pairs: Any) -> dict[str, Any]:
    """What every run in one folder must share."""
    ids_sha = hashlib.sha256("\n".join(pairs.ids).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return {"version": SETTINGS_VERSION, "dataset": str(Path(cfg.data_dir).resolve()),
            "masks_dir": cfg.masks_dir, "n_pairs": len(pairs), "ids_sha256": ids_sha,
            "multiclass": bool(cfg.multiclass), "n_classes": int(pairs.n_classes),
            "image_size": int(cfg.image_size), "test_fraction": float(cfg.test_fraction),
            "split_seed": int(cfg.split_seed), **_evaluate_on_setting(cfg), "rounds": int(cfg.rounds),
            "features": cfg.features,
            "ssl_epochs": cfg.ssl_epochs, **_ssl_schedule_setting(cfg), **_ssl_candidates_setting(cfg),
            **_feature_seeds_setting(cfg),
            "seg": {k: v for k, v in dataclasses.asdict(seg).items() if k not in _NOT_RESULTS}}


def _feature_seeds_setting(cfg: BenchmarkConfig) -> dict[str, int]:
    # recorded only when set, so folders written before the options existed still match
    out = {} if cfg.feature_seeds is None else {"feature_seeds": int(cfg.feature_seeds)}
    if int(cfg.feature_seed_offset):
        out["feature_seed_offset"] = int(cfg.feature_seed_offset)
    return out


def _ssl_candidates_setting(cfg: BenchmarkConfig) -> dict[str, str]:
    # recorded only when not the default (every augmentation candidate), so older folders still match
    c = cfg.ssl_candidates
    return {} if cfg.features not in MOCO_LAYERS or c in (None, "auto") else {"ssl_candidates": c}


def feature_seed(cfg: BenchmarkConfig, seed: int) -> int:
    """The encoder (features) seed ``seed`` selects from: ``seed % feature_seeds``, or ``seed`` itself, plus
    ``feature_seed_offset``."""
    return encoder_of(seed, cfg.feature_seeds, cfg.feature_seed_offset)


def encoder_of(seed: int, feature_seeds: int | None, offset: int = 0) -> int:
    """Encoder seed of run seed ``seed``: offset + seed % feature_seeds (offset + seed when None); also what
    a folder's settings.json says (``feature_seeds``, ``feature_seed_offset``) for readers of its features."""
    return int(offset or 0) + (int(seed) if feature_seeds is None else int(seed) % int(feature_seeds))


#: --features kinds that train MoCo, and the layer each embeds (the training is the same for all: a folder's
#: cached encoder gives another layer without training again, see coldseg.features.embed)
MOCO_LAYERS = {"moco": "head", "moco-backbone": "backbone", "moco-multiscale": "multiscale"}

#: MoCo schedule of folders written before it was recorded (MocoConfig's defaults until 2026-11-27)
LEGACY_SSL_SCHEDULE = {"ssl_batch_size": 128, "ssl_min_steps": 0}


def _ssl_schedule_setting(cfg: BenchmarkConfig) -> dict[str, int]:
    # the effective MoCo batch and minimum steps, so a change of MocoConfig's defaults cannot mix two
    # feature trainings in one folder; folders that lack them were made with LEGACY_SSL_SCHEDULE
    if cfg.features not in MOCO_LAYERS:
        return {}
    from coldseg.features.train import MocoConfig

    d = MocoConfig()
    return {"ssl_batch_size": int(d.batch_size if cfg.ssl_batch_size is None else cfg.ssl_batch_size),
            "ssl_min_steps": int(d.min_steps if cfg.ssl_min_steps is None else cfg.ssl_min_steps)}


def _evaluate_on_setting(cfg: BenchmarkConfig) -> dict[str, str]:
    # recorded only when not the default, so folders written before the option existed still match
    return {} if cfg.evaluate_on == "test" else {"evaluate_on": cfg.evaluate_on}


def evaluation_split(cfg: BenchmarkConfig, ids: Sequence[str], groups: Sequence[str] | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(pool_idx, eval_idx) into the dataset's pairs.

    ``evaluate_on='test'``: the pool/test split. ``'validation'``: the same split, then the pool is split
    again (grouped, same fraction, seed ``split_seed + 1``) into a smaller pool and a validation set;
    runs train and score inside the original pool only, so design choices made on these numbers never
    see a test image.
    """
    from coldseg.data.splits import pool_test_split

    pool_idx, test_idx = pool_test_split(ids, groups, test_fraction=cfg.test_fraction, seed=cfg.split_seed)
    if cfg.evaluate_on == "test":
        return pool_idx, test_idx
    sub_groups = None if groups is None else [groups[i] for i in pool_idx]
    inner, val = pool_test_split(len(pool_idx), sub_groups, test_fraction=cfg.test_fraction,
                                 seed=cfg.split_seed + 1)
    return pool_idx[inner], pool_idx[val]


def plan(cfg: BenchmarkConfig, kinds: dict[str, str], n_pool: int, dataset: str,
         done: set[R.RunKey]) -> tuple[list[Run], int]:
    """(runs still to do in sweep order, number skipped because results.csv has them)."""
    from coldseg.data.splits import subset_size

    grid = [(s, float(r), int(seed)) for s in kinds if kinds[s] != "full"
            for r in cfg.ratios for seed in cfg.seeds]
    if cfg.include_full or "full" in kinds.values():
        grid += [(R.FULL, 100.0, int(seed)) for seed in cfg.seeds]
    runs, skipped = [], 0
    for s, r, seed in dict.fromkeys(grid):
        if R.RunKey(dataset, s, R.norm_ratio(r), seed) in done:
            skipped += 1
        else:
            runs.append(Run(s, R.norm_ratio(r), seed, n_pool if s == R.FULL else subset_size(r, n_pool)))
    return runs, skipped


def run_benchmark(cfg: BenchmarkConfig, *, features_fn: FeaturesFn | None = None) -> Outcome:
    """Run every missing (strategy, ratio, seed) of ``cfg``; write results, then the report."""
    from coldseg.data.pairs import load_pairs
    from coldseg.segment.train import SegConfig, resolve_device

    t_start = time.perf_counter()
    validate(cfg)
    kinds = strategy_kinds(cfg.strategies)
    seg = cfg.seg or SegConfig()
    pairs = load_pairs(cfg.data_dir, cfg.image_size, multiclass=cfg.multiclass, progress=cfg.progress,
                       masks_dir=cfg.masks_dir)
    pool_idx, test_idx = evaluation_split(cfg, pairs.ids, pairs.groups)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # one invocation per folder at a time: a second would redo the first's runs and could remove its
    # temporary files as dead ones (the lock dies with its process, so a killed run leaves none)
    with folder_lock(out, wait=False, what="coldseg benchmark"):
        for folder in (out, out / "features"):   # temporaries of a killed earlier invocation
            remove_dead_temp_files(folder)
        R.check_or_write_settings(out, settings_of(cfg, seg, pairs),
                                  legacy=LEGACY_SSL_SCHEDULE if cfg.features in MOCO_LAYERS else None)
        dataset = Path(cfg.data_dir).resolve().name
        runs, skipped = plan(cfg, kinds, len(pool_idx), dataset, R.done_keys(out))
        orphans = R.records_without_result(out) & {R.RunKey(dataset, r.strategy, r.ratio, r.seed) for r in runs}
        if len(orphans) > 1:
            warnings.warn(f"{len(orphans)} planned runs already have a record in {out / R.RUNS} but no row in "
                          f"{out / R.RESULTS}, which decides what is done: they run again. Rows copied from another "
                          "folder must go into both files.", stacklevel=2)
        dev = resolve_device(cfg.device)
        if runs:   # sessions that add runs are logged (command, device, wall time); a no-op rerun is not
            R.log_session(out, {"command": cfg.command or "(library call)", "device": str(dev),
                                "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            ctx = _Ctx(cfg, seg, pairs, pool_idx, test_idx, dataset, dev, out,
                       features_fn or _features_fn(cfg, out), kinds, own_features=features_fn is None)
            ctx.execute(runs)
        wall = time.perf_counter() - t_start
        if runs:
            R.log_session(out, {"wall_seconds": round(wall, 1), "new_runs": len(runs), "skipped_runs": skipped},
                          update_last=True)
        from coldseg.bench.report import write_report

        return Outcome(out, len(runs), skipped, wall, write_report(out))


def _features_fn(cfg: BenchmarkConfig, out: Path) -> FeaturesFn:
    def moco(layer: str) -> FeaturesFn:
        return moco_features_fn(image_size=cfg.image_size, epochs=cfg.ssl_epochs, batch_size=cfg.ssl_batch_size,
                                min_steps=cfg.ssl_min_steps, candidates=cfg.ssl_candidates,
                                cache_dir=out / "features" / "moco", device=cfg.device,
                                progress=cfg.progress, layer=layer)

    table: dict[str, Callable[[], FeaturesFn]] = {"pixels": lambda: pixel_features}
    table.update({kind: (lambda layer=layer: moco(layer)) for kind, layer in MOCO_LAYERS.items()})
    if cfg.features not in table:
        raise ValueError(f"features={cfg.features!r}: choose one of {', '.join(table)}, or pass features_fn")
    return table[cfg.features]()


class _Ctx:
    """One invocation's state: turns planned runs into trainings and rows."""

    def __init__(self, cfg, seg, pairs, pool_idx, test_idx, dataset, dev, out, features_fn, kinds,
                 own_features: bool = False):
        self.cfg, self.seg, self.pairs, self.dev, self.out = cfg, seg, pairs, dev, out
        self.pool_idx, self.test_idx, self.dataset = pool_idx, test_idx, dataset
        self.features_fn, self.kinds = features_fn, kinds
        self.own_features = own_features          # features_fn is the config's own (workers can rebuild it)
        self.picks: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}   # run key -> (pool positions, info)
        self.lock = threading.Lock()

    # -- selections ---------------------------------------------------------------------------
    def features_path(self, fseed: int) -> Path:
        return self.out / "features" / f"{self.cfg.features}-seed{fseed}.npy"

    def features(self, seed: int, needs: tuple[str, ...] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        fseed = feature_seed(self.cfg, seed)
        return cached_features(self.features_fn, self.pairs.images[self.pool_idx], fseed,
                               self.features_path(fseed), needs)

    def train_encoders_side_by_side(self, runs: list[Run]) -> None:
        """On a CPU with workers > 1: train the missing MoCo encoders of ``runs`` in worker processes."""
        from coldseg.segment.workers import run_pool
        from coldseg.select.registry import get_selector

        workers = int(self.cfg.workers or 1)
        if not (self.own_features and self.dev.type == "cpu" and workers > 1 and self.cfg.features in MOCO_LAYERS):
            return
        reading = [r for r in runs if get_selector(r.strategy).reads_features]
        needs = tuple(sorted({k for r in reading for k in get_selector(r.strategy).needs}))
        wanted = sorted({feature_seed(self.cfg, r.seed) for r in reading})
        todo = [f for f in wanted if not self.features_path(f).exists()]
        if len(todo) < 2:
            return
        import torch

        workers = min(workers, len(todo))
        threads = max(1, (os.cpu_count() or 1) // workers)
        images = torch.from_numpy(np.ascontiguousarray(self.pairs.images[self.pool_idx])).share_memory_()
        cfg = dataclasses.replace(self.cfg, progress=False)
        payloads = [(f, str(self.features_path(f)), needs) for f in todo]
        bar = tqdm(total=len(todo), desc=f"MoCo encoders ({workers} side by side)", unit="encoder",
                   disable=not self.cfg.progress)
        for _ in run_pool(_encoder_worker, (cfg, str(self.out), images, threads), payloads, workers,
                          label="encoder", where="cpu", describe=lambda j: f"feature seed {todo[j]}"):
            bar.update(1)
        bar.close()

    def select_oneshot(self, runs: list[Run]) -> None:
        from coldseg.select.registry import get_selector

        self.train_encoders_side_by_side(runs)
        for seed in sorted({r.seed for r in runs}):
            mine = [r for r in runs if r.seed == seed]
            needs = tuple(sorted({k for r in mine for k in get_selector(r.strategy).needs}))
            if any(get_selector(r.strategy).reads_features for r in mine):
                X, side = self.features(seed, needs)                        # (n_pool, d), {name: (n_pool,)}
            else:   # only `random`: its picks depend on n and the seed, so no encoder is trained for it
                X, side = np.zeros((len(self.pool_idx), 1), dtype=np.float32), {}
            for run in mine:
                t0 = time.perf_counter()
                sel = get_selector(run.strategy).select(X, run.n_labeled, random_state=seed, side=side)
                self.picks[run.key] = (sel.indices, {"selection_seconds": time.perf_counter() - t0,
                                                     "info": sel.info})

    def select_full(self, runs: list[Run]) -> None:
        for run in runs:
            self.picks[run.key] = (np.arange(len(self.pool_idx)), {})

    def select_iterative(self, runs: list[Run]) -> None:
        from coldseg.iterative.parallel import IterativeJob, run_iterative

        cache = self.out / "iterative_selections.jsonl"
        known = {rec["key"]: rec for rec in R.read_jsonl(cache)}
        todo = []
        for run in runs:
            rec = known.get(run.key)
            if rec is not None and len(rec["indices"]) == run.n_labeled:
                self.picks[run.key] = (np.asarray(rec["indices"], dtype=np.int64), rec["info"])
            else:
                todo.append(IterativeJob(run.key, run.strategy, run.n_labeled, run.seed))
        bar = tqdm(total=len(todo), desc="iterative selections", unit="run", disable=not self.cfg.progress)
        for job, res in run_iterative(todo, self.pairs, self.pool_idx, self.seg, rounds=self.cfg.rounds,
                                      device=self.dev, workers=self.cfg.workers, stack=self.cfg.stack):
            info = {"round_sizes": res.round_sizes, **res.info}
            R.append_jsonl(cache, {"key": job.key, "indices": res.indices.tolist(), "info": info})
            self.picks[job.key] = (res.indices, info)
            bar.update(1)
        bar.close()

    # -- trainings ----------------------------------------------------------------------------
    def execute(self, runs: list[Run]) -> None:
        select = {"selector": self.select_oneshot, "full": self.select_full,
                  "iterative": self.select_iterative}
        by_kind: dict[str, list[Run]] = {}
        for run in runs:
            by_kind.setdefault(self.kinds.get(run.strategy, "full"), []).append(run)
        early = [r for k in ("selector", "full") for r in by_kind.get(k, [])]
        late = by_kind.get("iterative", [])
        bar = tqdm(total=len(runs), desc="benchmark runs", unit="run", disable=not self.cfg.progress)
        with R.ResultsWriter(self.out) as writer:
            # On a GPU the iterative rounds run beside features, one-shot selection and their final
            # trainings (all independent of each other), so the card is never left to one job.
            side = _Side(select["iterative"], late) if self.overlap() and early and late else None
            try:
                for kind in ("selector", "full"):
                    select[kind](by_kind.get(kind, []))
                self.train(early, writer, bar)
            finally:
                err = side.join() if side else None
            if err is not None:
                raise err
            if side is None:
                select["iterative"](late)
            self.train(late, writer, bar)
        bar.close()

    def overlap(self) -> bool:
        """Run the iterative selections in a side thread (worth it when a GPU is shared).

        Only when they run in worker processes: in this process (stacked, or one at a time) they
        would race the main thread on the global torch generator (weight init under
        ``manual_seed``, MC-dropout masks, MoCo init), making picks depend on timing.
        """
        from coldseg.segment.runner import resolve_parallelism

        return self.dev.type == "cuda" and resolve_parallelism(self.dev, self.cfg.workers,
                                                               self.cfg.stack)[0] > 1

    def train(self, runs: list[Run], writer: R.ResultsWriter, bar: tqdm) -> None:
        from coldseg.segment.runner import SegJob, run_jobs

        if not runs:
            return
        by_key = {r.key: r for r in runs}
        jobs = [SegJob(r.key, self.pool_idx[self.picks[r.key][0]], r.seed) for r in runs]
        for job, res in run_jobs(jobs, self.pairs, self.test_idx, self.seg, device=self.dev,
                                 workers=self.cfg.workers, stack=self.cfg.stack, progress=False):
            run = by_key[job.key]
            pos, info = self.picks[run.key]
            row = {"dataset": self.dataset, "strategy": run.strategy, "ratio": run.ratio,
                   "n_labeled": len(pos), "seed": run.seed, "dice": res["dice_mean"],
                   "hd95": res["hd95_mean"], "train_seconds": round(res["train_seconds"], 3),
                   "device": res["device"]}
            with self.lock:
                # runs.jsonl first: results.csv is the commit point (a kill between the two leaves a
                # record whose run is redone and recorded again; the other order would lose its ids)
                R.append_run_record(self.out, {**row, "ids": [self.pairs.ids[i] for i in self.pool_idx[pos]],
                                               "selection": info})
                writer.write(row)
                bar.update(1)
                bar.set_postfix(last=run.key, dice=f"{res['dice_mean']:.3f}")


def _encoder_worker(rank: int, jobs_q, results_q, cfg: BenchmarkConfig, out: str, images, threads: int) -> None:
    """Worker process: train (and cache) one MoCo encoder per job ``(feature seed, path, needs)``."""
    from coldseg.segment.workers import serve, worker_device

    def setup():
        worker_device("cpu", threads)
        return _features_fn(cfg, Path(out)), images.numpy()

    def handle(state, payload):
        fn, pool_images = state
        fseed, path, needs = payload
        cached_features(fn, pool_images, int(fseed), Path(path), tuple(needs))
        return path

    serve(rank, jobs_q, results_q, setup, handle)


class _Side:
    """``fn(arg)`` in a thread; ``join()`` waits and returns its exception (or None)."""

    def __init__(self, fn: Callable[[Any], None], arg: Any):
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, arg), daemon=True, name="coldseg-iterative")
        self.thread.start()

    def _run(self, fn, arg) -> None:
        try:
            fn(arg)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread by join()
            self.error = e

    def join(self) -> BaseException | None:
        self.thread.join()
        return self.error
