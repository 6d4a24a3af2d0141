"""One tfnas process per run directory.

Two commands on one workdir at once (two searches, a selection started twice by a job
array, a selection while its search still runs) would both append every epoch and event to
the same logs. Every command that writes a workdir takes `WORKDIR/.tfnas-lock` first:

- the lock is an advisory `flock` on that file, taken without waiting; the kernel releases
  it when the process ends in any way (kill -9 included), so a dead holder never blocks a
  rerun, and its leftover file is simply taken over;
- the file holds the holder's host, pid, command and start time, for the one line a second
  command gets (exit code 2, nothing written);
- the holder removes the file when it exits (a taker checks that the file it locked is still
  the one at the path, so a removal racing with a start cannot give two holders);
- a filesystem without `flock` (some network mounts) falls back to the file's content: a
  holder that is alive on this host, or any holder on another host, keeps the lock.

Only the chief of a multi-worker run takes it (the other workers write nothing there).
"""

import contextlib
import errno
import json
import os
import socket
import time

from tfnas.errors import WorkdirError

LOCK_NAME = ".tfnas-lock"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _describe(info, path):
    if not info:
        return f"another tfnas process (lock file {path})"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (f"`tfnas {info.get('command', '?')}` (pid {info.get('pid', '?')} on host "
            f"{info.get('host', '?')}, since {since})")


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class WorkdirLock:
    """The lock of one run directory; `acquire` raises WorkdirError when it is held.
    `path`: the lock file (default: FOLDER/.tfnas-lock, the folder created if missing)."""

    def __init__(self, folder, command, path=None):
        self.folder, self.command = folder, command
        self.path = path or os.path.join(folder, LOCK_NAME)
        self.creates_folder = path is None
        self.fd = None
        self.created_folder = False

    def acquire(self):
        import fcntl
        if self.creates_folder and not os.path.isdir(self.folder):
            os.makedirs(self.folder)
            self.created_folder = True
        info = {"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                "started": time.time()}
        for _ in range(20):  # a holder removing its file between our open and lock: retry
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    self._refuse(_read(self.path))
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                return self._acquire_without_flock(info)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
            self.fd = fd
            return self
        raise WorkdirError(f"could not take the lock {self.path}; retry")

    def _acquire_without_flock(self, info):
        old = _read(self.path)
        if old and old.get("pid") != os.getpid() and (
                old.get("host") != info["host"] or _alive(int(old.get("pid", 0)))):
            self._refuse(old)
        with open(self.path, "w") as f:
            f.write(json.dumps(info) + "\n")
        self.fd = -1
        return self

    def _refuse(self, info):
        if self.created_folder:
            with contextlib.suppress(OSError):
                os.rmdir(self.folder)
            self.created_folder = False
        raise WorkdirError(f"{self.folder} is in use by {_describe(info, self.path)}; wait for "
                           f"it to end or stop it, or use another folder")

    def release(self):
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: a taker re-checks the path
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = None
        if self.created_folder:  # nothing was written (e.g. bad data): leave no empty folder
            with contextlib.suppress(OSError):
                os.rmdir(self.folder)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def workdir_lock(folder, command):
    """A context manager holding the lock of `folder` (created if missing, and removed again
    if it is still empty at the end); `command` names the holder in a refusal."""
    return WorkdirLock(folder, command)


def export_lock(out):
    """The lock of an export's --out folder: a file beside it (the folder itself is only
    ever swapped in whole), `.tfnas-lock-NAME` in its parent."""
    out = os.path.abspath(out)
    parent, name = os.path.split(out)
    return WorkdirLock(out, "export", path=os.path.join(parent, f"{LOCK_NAME}-{name}"))


def chief_lock(is_chief, workdir, command):
    """The workdir's lock, held by the chief only: the other workers of a multi-worker run
    write nothing there."""
    return workdir_lock(workdir, command) if is_chief else contextlib.nullcontext()
