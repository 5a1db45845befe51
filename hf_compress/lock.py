"""One run per output folder: an exclusive lock held for the whole run.

Two `hf-compress run` on one ``--output-dir`` would discard each other's ``.work`` checkpoints and overwrite each
other's stage outputs, both exiting 0. The lock is an ``flock`` on ``OUTPUT/.hf_compress.lock``: the kernel releases
it when the holder exits, however it exits (kill -9 included), so a lock left by a killed run is never in the way.
The file itself records who holds it (pid, host, start time, command) so the refusal can say so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .validation import RecipeError

logger = logging.getLogger(__name__)
LOCK_NAME = ".hf_compress.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info['pid']} on {info.get('host', '?')} (started {started}: {info.get('command', '?')})"


def held_by(output_dir: Path) -> str | None:
    """Who holds ``output_dir``'s lock (as `output_lock`'s refusal names them), or None when nobody does. Creates
    nothing: a folder without a lock file is free."""
    path = Path(output_dir) / LOCK_NAME
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _holder(path)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def in_use_error(output_dir: Path, holder: str) -> RecipeError:
    return RecipeError(
        f"{output_dir} is in use by another hf-compress run: {holder}. Wait for it to finish, or "
        "choose another --output-dir (a run that was killed releases the lock by itself)."
    )


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold the output folder's lock for the ``with`` block; a `RecipeError` (exit code 2) naming the holder when
    another live run has it. Where ``flock`` does not exist (Windows) no lock is taken and a warning says so."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux / macOS
        logger.warning("no file locking on this platform: do not run two hf-compress runs on %s at once", output_dir)
        yield
        return
    path = Path(output_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise in_use_error(output_dir, _holder(path)) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(sys.argv)[:300]}  # fmt: skip
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released: nobody holds it (the file stays; an empty lock file is free)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
