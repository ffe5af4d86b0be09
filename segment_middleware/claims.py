"""Who holds a claim on a store row, and whether that holder still runs.

A claim names its owner by a token of host name, pid and a random part, made afresh in
each process (a forked child gets its own). A pid alone is no identity: containers that
share the store's file each count pids in their own namespace, and a pid is reused once
its process has ended.

Liveness is a lock, not a pid. An owner holds a POSIX lock, which the kernel drops when
the process ends however it ends, on a file named by its token in a directory next to
the store. SQLite's WAL mode needs every process of a store on one kernel, so every
process that can open the store can see that lock, whatever container it runs in. A token
whose file is missing, or whose lock can be taken, belongs to a process that has ended.
Where there is no ``fcntl`` (Windows), the same host's pid test stands in, and claims of
other hosts are taken to be alive.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import tempfile
import threading
from dataclasses import dataclass, field

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LEGACY_PREFIX", "ended", "hold", "owners_dir", "token"]

#: Claims migrated from schema version 0 name only a pid: ``pid:<n>``, on this host.
LEGACY_PREFIX = "pid:"
_SUFFIX = ".lock"


@dataclass
class _Me:
    pid: int
    token: str
    held: dict[str, int] = field(default_factory=dict)  # owners directory -> fd whose lock we hold


_me: _Me | None = None
_lock = threading.Lock()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"


def _current() -> _Me:
    global _me
    me = _me
    if me is None or me.pid != os.getpid():
        with _lock:
            me = _me
            if me is None or me.pid != os.getpid():
                pid = os.getpid()
                me = _me = _Me(pid, f"{_host()}:{pid}:{secrets.token_hex(8)}")
    return me


def _after_fork_in_child() -> None:
    """A child is a new owner: the parent's lock files are not its to hold (POSIX locks are
    not inherited, so closing the copies leaves the parent's locks in place)."""
    global _me, _lock
    me, _me, _lock = _me, None, threading.Lock()
    if me is not None:
        for fd in me.held.values():
            with contextlib.suppress(OSError):
                os.close(fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def token() -> str:
    """This process's owner token."""
    return _current().token


def owners_dir(store_path: str) -> str:
    return os.path.realpath(store_path) + "-owners"


def _lock_path(directory: str, owner: str) -> str:
    return os.path.join(directory, re.sub(r"[^A-Za-z0-9._-]", "-", owner) + _SUFFIX)


def hold(store_path: str) -> str:
    """This process's token, after making sure it holds its lock file beside the store:
    called before any claim is written, so that no live claim lacks its lock."""
    me = _current()
    if fcntl is None:  # pragma: no cover - Windows
        return me.token
    directory = owners_dir(store_path)
    with _lock:
        if directory not in me.held:
            os.makedirs(directory, exist_ok=True)
            _sweep(directory)
            me.held[directory] = _take(directory, me.token)
    return me.token


def _take(directory: str, owner: str) -> int:
    """Create the owner's lock file already locked: it appears under its name (by rename)
    only once locked, so no prober can find it unlocked while its owner lives."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # probers of other users take a shared lock, which needs reading only
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(tmp, _lock_path(directory, owner))
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd


def _sweep(directory: str) -> None:
    """Remove the lock files of owners that have ended, so that the directory holds about
    one file per live process."""
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(_SUFFIX):
                _gone(entry.path)


def _gone(path: str) -> bool:
    """True when no process holds ``path``'s lock (the file is then removed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # unreadable: its owner cannot be told ended
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return False
        with contextlib.suppress(OSError):
            os.unlink(path)
        return True
    finally:
        os.close(fd)  # drops this process's lock on that file; it never holds another there


def ended(owner: str, store_path: str) -> bool:
    """Whether the process behind ``owner`` (a claim's token) has ended."""
    me = _current()
    if owner == me.token:
        return False
    if owner.startswith(LEGACY_PREFIX):
        # This process made no such claim, so one under its own pid is a predecessor's.
        pid = int(owner[len(LEGACY_PREFIX) :])
        return pid == me.pid or not _pid_alive(pid)
    if fcntl is None:  # pragma: no cover - Windows
        host, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        return host == _host() and pid_text.isdigit() and not _pid_alive(int(pid_text))
    return _gone(_lock_path(owners_dir(store_path), owner))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
