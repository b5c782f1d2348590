"""Fault-injection harness for tests/test_faults.py: run ``coldseg`` in a child process and SIGKILL it.

Two ways to kill, both deterministic enough for CI:
  * from outside (:func:`kill_when`): poll for a file state (a checkpoint exists, results.csv has k
    lines) or a seeded delay, then ``os.kill(pid, SIGKILL)``;
  * from inside, at an exact point (``--kill-after ARM:K``): this file, run as a script, wraps the
    function ARM ('module:attr.path'); once it has been called, every file-system mutation (open for
    writing, write to a regular file, fsync, ftruncate, replace/rename, unlink, mkdir, rmdir) is an
    event, and the process SIGKILLs itself right after event K (K=0: when ARM is first called).
    ``--trace FILE`` appends one line per event, so a run without a kill tells the test how many
    points there are.

The library is never changed for this: the child is ``python tests/_faults.py [options] -- ARGS``,
which patches the standard library in the child only and then calls ``coldseg.cli.main(ARGS)``.
Options: ``--width W`` (the CLI has no width flag: train the tiny width-W encoder, as conftest's
``tiny_cli`` does in-process), ``--threads N`` (torch threads).
"""
from __future__ import annotations

import builtins
import hashlib
import importlib
import io
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

HERE = Path(__file__).resolve()
STAGING = ".coldseg-staging-"
JOURNAL = ".coldseg-commit.json"


# ------------------------------------------------------------------ parent side (the tests)
def coldseg_cmd(*args, width: int | None = 8, threads: int = 1, kill_after: str | None = None,
                trace: Path | None = None) -> list[str]:
    cmd = [sys.executable, str(HERE), "--threads", str(threads)]
    if width is not None:
        cmd += ["--width", str(width)]
    if kill_after:
        cmd += ["--kill-after", kill_after]
    if trace is not None:
        cmd += ["--trace", str(trace)]
    return cmd + ["--"] + [str(a) for a in args]


def run(cmd: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run to completion; the child's stdout and stderr come back as text."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def kill_when(cmd: Sequence[str], ready: Callable[[int], bool] | None = None, *, delay: float = 0.0,
              timeout: float = 300, poll: float = 0.02) -> tuple[int, str, bool]:
    """Start ``cmd``; SIGKILL it ``delay`` s after ``ready(pid)`` first holds (or after ``delay`` s when
    ``ready`` is None). Returns (exit code, stderr, whether SIGKILL ended it: by us, or by itself
    through ``--kill-after``; False when it ended on its own first)."""
    with open(os.devnull, "wb") as null:
        err_f = io.BytesIO()
        p = subprocess.Popen(cmd, stdout=null, stderr=subprocess.PIPE, env=_env())
        os.set_blocking(p.stderr.fileno(), False)
        t_end = time.monotonic() + timeout
        fire_at = None if ready is not None else time.monotonic() + delay
        while p.poll() is None:
            _drain(p.stderr, err_f)
            now = time.monotonic()
            if fire_at is None and ready(p.pid):
                fire_at = now + delay
            if fire_at is not None and now >= fire_at:
                os.kill(p.pid, signal.SIGKILL)
                break
            if now > t_end:
                p.kill()
                raise TimeoutError(f"{cmd} ran past {timeout} s")
            time.sleep(poll)
        p.wait()      # reap it: an unreaped child would still look alive to the staging clean-up
        _drain(p.stderr, err_f)
        p.stderr.close()
    return p.returncode, err_f.getvalue().decode(errors="replace"), p.returncode == -signal.SIGKILL


def _drain(pipe, sink: io.BytesIO) -> None:
    try:
        while chunk := pipe.read(65536):
            sink.write(chunk)
    except (BlockingIOError, TypeError):
        pass


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COLDSEG_DEBUG", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                out.append(int(d))
    return out


def running(pid: int) -> bool:
    """Alive and not a zombie (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def count_events(trace: Path) -> int:
    return len(trace.read_text().splitlines()) if trace.exists() else 0


def tree(folder: Path, *, skip: Callable[[str], bool] = lambda name: False) -> dict[str, bytes]:
    """Relative path -> bytes of every file below ``folder`` (folders as b'<dir>')."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not skip(rel):
            out[rel] = p.read_bytes() if p.is_file() else b"<dir>"
    return out


def checksums(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 (and mode) of every entry below ``folder``: the input-folder guard."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else "-"
        out[p.relative_to(folder).as_posix()] = f"{digest} {stat.filemode(st.st_mode)} {st.st_mtime_ns}"
    return out


def leftovers(folder: Path) -> list[str]:
    """Staging folders, journals and temporary files a finished run must not leave behind."""
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.name.startswith(STAGING) or p.name.startswith(JOURNAL) or ".tmp" in p.name)


# ------------------------------------------------------------------ child side (run as a script)
class _Faults:
    def __init__(self, kill_after: str | None, trace: str | None):
        self.armed = False
        self.n = 0
        self.kill_at = None
        self.trace = open(trace, "a", buffering=1) if trace else None
        if kill_after:
            target, k = kill_after.rsplit(":", 1)
            self.kill_at = int(k)
            self._arm_on(target)
        elif self.trace:
            raise SystemExit("--trace needs --kill-after ARM:K (use a K larger than the run's events)")
        self._patch()

    def _arm_on(self, target: str) -> None:
        mod_name, attr = target.split(":")
        obj = importlib.import_module(mod_name)
        *path, last = attr.split(".")
        for a in path:
            obj = getattr(obj, a)
        real = getattr(obj, last)
        faults = self

        def armed(*a, **k):
            if not faults.armed:
                faults.armed = True
                faults.event(f"arm {target}", after=False)
            return real(*a, **k)

        setattr(obj, last, armed)

    def event(self, what: str, *, after: bool = True) -> None:
        if after:
            self.n += 1
        if self.trace and after:
            self.trace.write(f"{self.n} {what}\n")
        if self.kill_at is not None and self.n == self.kill_at:
            if self.trace:
                self.trace.write(f"KILL after event {self.n}\n")
                self.trace.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def _patch(self) -> None:
        faults = self

        def wrap(name, describe):
            real = getattr(os, name)

            def f(*a, **k):
                r = real(*a, **k)
                if faults.armed:
                    d = describe(*a, **k)
                    if d is not None:
                        faults.event(f"{name} {d}")
                return r

            setattr(os, name, f)

        def path_of(*a, **k):
            return f"{os.fspath(a[0]) if not isinstance(a[0], int) else a[0]}"

        for name in ("replace", "rename"):
            wrap(name, lambda src, dst, **k: f"{os.fspath(src)} -> {os.fspath(dst)}")
        for name in ("unlink", "remove", "rmdir", "mkdir"):
            wrap(name, path_of)
        wrap("open", lambda p, flags, *a, **k: os.fspath(p) if flags & (os.O_WRONLY | os.O_RDWR) else None)
        wrap("write", lambda fd, data: f"fd{fd} {len(data)} bytes" if _is_file(fd) else None)
        wrap("fsync", lambda fd: f"fd{fd}")
        wrap("ftruncate", lambda fd, n: f"fd{fd} to {n}")
        real_open = builtins.open

        def open_(file, mode="r", *a, **k):
            f = real_open(file, mode, *a, **k)
            if faults.armed and any(c in mode for c in "wax+") and not isinstance(file, int):
                faults.event(f"open({mode}) {os.fspath(file)}")
            return f

        builtins.open = open_
        io.open = open_


def _is_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _child(argv: list[str]) -> int:
    opts, args = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    o = dict(zip(opts[::2], opts[1::2]))
    import torch

    torch.set_num_threads(int(o.get("--threads", "1")))
    import coldseg.cli

    if "--width" in o:
        import dataclasses

        from coldseg.features.train import MocoConfig

        def moco(args):  # conftest's tiny_moco, with the command line's size, epochs, batch, candidates
            return dataclasses.replace(MocoConfig(), image_size=args.image_size, epochs=args.epochs,
                                       batch_size=args.batch_size, width=int(o["--width"]), eval_images=32,
                                       candidates=args.candidates, min_steps=0)

        coldseg.cli._moco = moco
    _Faults(o.get("--kill-after"), o.get("--trace"))
    return coldseg.cli.main(args)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
