"""Ownership across processes: lock files that name their owner, and caches built once.

:class:`FileLock` is an exclusive ``flock`` on a small file that holds the owner's pid, host and
start time while it is held. The kernel releases it when the owner exits, however it dies
(SIGKILL included), so a lock is never left stale; children forked by the owner close their copy
(so a lock never outlives its process), and it works on NFS, where Linux maps it onto the NFS
lock protocol (on Lustre, mount with ``-o flock``). A process holds a given lock file once at a time.

:func:`build_cached` builds a folder once, however many processes ask for it at the same moment:
the first builds it into a private temporary folder beside the target and renames it into place
under the target's lock; the others wait on the lock and reuse the result.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import UserError

log = logging.getLogger("harness")

_held: dict[str, int] = {}  # lock files this process holds -> their descriptors


def _close_in_child() -> None:
    """In a forked child: close the inherited lock descriptors (the parent keeps its locks)."""
    for fd in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class LockBusy(Exception):
    """The lock is held by another process (``FileLock.acquire(wait=False)``)."""


class FileLock:
    """An exclusive lock on ``path`` (created if missing) that records its owner while held."""

    def __init__(self, path: str | Path, what: str | None = None):
        self.path = Path(path)
        self.what = what or str(self.path)
        self._fd: int | None = None
        self._pid: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def owner(self) -> dict:
        """The recorded owner (``pid``, ``host``, ``since``), or {} when nobody holds it."""
        try:
            text = self.path.read_text()
        except OSError:
            return {}
        try:
            return json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            return {}

    def describe_owner(self) -> str:
        owner = self.owner()
        if not owner:
            return "another process"
        return f"pid {owner.get('pid')} on host {owner.get('host')} (since {owner.get('since')})"

    def acquire(self, wait: bool = True, poll: float = 0.5, note: Callable[[str], None] | None = None) -> None:
        """Take the lock; with ``wait=False`` raise :class:`LockBusy` if another process has it.

        While waiting, ``note`` (default: the log) gets one line naming the owner.
        """
        key = str(self.path.resolve())
        if key in _held:
            raise RuntimeError(f"this process already holds {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        noted = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        raise LockBusy(self.describe_owner()) from None
                    if not noted:
                        (note or log.info)(f"waiting for {self.what}: held by {self.describe_owner()}")
                        noted = True
                    time.sleep(poll)
                except OSError as err:  # e.g. ENOLCK: a file system without locks
                    raise UserError(f"cannot lock {self.path}: {err.strerror}; the folder's file system must support "
                                    "flock (on Lustre: mount with -o flock)") from None
        except BaseException:
            os.close(fd)
            raise
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self._fd, self._pid = fd, os.getpid()
        _held[key] = fd

    def release(self) -> None:
        """Clear the owner record and let the lock go (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if self._pid != os.getpid():  # a forked child: its copy is closed already, the lock is the parent's
            return
        _held.pop(str(self.path.resolve()), None)
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_path(target: Path) -> Path:
    """The lock file of a folder built by :func:`build_cached`: beside it, hidden."""
    return target.with_name(f".{target.name}.lock")


def build_cached(
    target: str | Path,
    build: Callable[[Path], None],
    ready: Callable[[Path], bool] | None = None,
) -> Path:
    """``target``, built by ``build(folder)`` unless it is already there; safe from many processes.

    ``ready(target)`` says whether an existing folder can be reused (default: it exists; a folder
    is only ever published whole, so existence means complete). Otherwise, under the target's lock,
    ``build`` fills a fresh private folder beside the target, which then replaces the target with
    renames (readers see the old folder or the new one, never half of one). Processes that asked at
    the same time wait on the lock and reuse what the first one built. Leftovers of builders that
    were killed are removed. Returns ``target``.
    """
    target = Path(target)
    ready = ready or (lambda path: path.is_dir())
    if ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(target), what=f"{target} (being built)"):
        if ready(target):  # built by another process while this one waited
            return target
        prefix = f".{target.name}.build-"
        for stale in target.parent.glob(prefix + "*"):  # killed builders' folders; nobody else builds now
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        try:
            build(scratch)
            os.chmod(scratch, 0o755)
            if target.exists() or target.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
                os.replace(target, old / target.name)
                os.replace(scratch, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(scratch, target)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return target
