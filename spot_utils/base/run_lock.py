"""One pipeline at a time per run folder: an exclusive lock on runs/<run>/.lock, held while the run executes.

The lock is an flock(2) on the file: the kernel drops it when its holder exits, however it exits (kill -9
included), so a lock left by a dead process is free for the next run without any staleness guess. The file
itself stays (removing it would let two processes lock two different files); it names the current holder.
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


class RunLocked(RuntimeError):
    """Another live process holds the run's lock."""


def lock_path(run_folder: str | os.PathLike) -> Path:
    return Path(run_folder) / ".lock"


@contextmanager
def run_lock(run_folder: str | os.PathLike, **holder) -> Iterator[Path]:
    """Hold the run folder's lock for the duration of the block, or raise RunLocked naming the holder.

    `holder` (e.g. params_file=...) is recorded with the pid, host and start time for whoever finds it taken.
    """
    path = lock_path(run_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"run {Path(run_folder).name!r} is in use: {_describe(fd)}; wait for it to finish "
                            "or choose another run_name") from None
        info = dict(pid=os.getpid(), host=socket.gethostname(),
                    started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **holder)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, default=str) + "\n").encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # nobody holds it now (the kernel releases the flock when fd closes)
    finally:
        os.close(fd)


def _describe(fd: int) -> str:
    """The holder recorded in the lock file, in words."""
    try:
        info = json.loads(os.pread(fd, 1 << 16, 0).decode())
    except (OSError, ValueError):
        return "held by a process that has not recorded itself yet"
    extra = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("pid", "host", "started"))
    return (f"held by process {info.get('pid')} on {info.get('host')} since {info.get('started')}"
            + (f" ({extra})" if extra else ""))
