"""One pipeline at a time per run folder: an exclusive lock on the folder runs/<run>/ itself, held while the run
executes.

The lock is an flock(2) on the run folder's directory: the kernel drops it when its holder exits, however it exits
(kill -9 included), so a lock left by a dead process is free for the next run without any staleness guess. Locking
the folder, not a file in it, means no file can be deleted to bypass it: removing `.lock` (which only names the
current holder, for whoever finds the run taken) changes nothing, and a folder removed and recreated under a
running pipeline is a different folder that the running one no longer writes to.
"""
from __future__ import annotations

from contextlib import contextmanager
import fcntl
import json
import os
from pathlib import Path
import socket
import time
from typing import Iterator

from .io import write_json


class RunLocked(RuntimeError):
    """Another live process holds the run's lock."""


def lock_path(run_folder: str | os.PathLike) -> Path:
    """The file naming the lock's holder (the lock itself is on the folder)."""
    return Path(run_folder) / ".lock"


@contextmanager
def run_lock(run_folder: str | os.PathLike, **holder) -> Iterator[Path]:
    """Hold the run folder's lock for the duration of the block, or raise RunLocked naming the holder.

    `holder` (e.g. params_file=...) is recorded with the pid, host and start time for whoever finds it taken.
    """
    folder = Path(run_folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"run {folder.name!r} is in use: {_describe(lock_path(folder))}; wait for it to "
                            "finish or choose another run_name") from None
        path = lock_path(folder)
        write_json(path, dict(pid=os.getpid(), host=socket.gethostname(),
                              started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **holder), indent=None)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)  # nobody holds it now (the kernel releases the flock when fd closes)
    finally:
        os.close(fd)


def _describe(path: Path) -> str:
    """The holder recorded in the lock's holder file, in words."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "held by a process that has not recorded itself (or whose record was deleted)"
    extra = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("pid", "host", "started"))
    return (f"held by process {info.get('pid')} on {info.get('host')} since {info.get('started')}"
            + (f" ({extra})" if extra else ""))
