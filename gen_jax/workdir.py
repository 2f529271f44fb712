"""The workdir's guards: writability checked before any work, and one training
process per workdir through an OS file lock (released by the kernel when the
process dies, so a killed run leaves no stale lock)."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from pathlib import Path

from gen_jax.errors import WorkdirError

# JAX is imported where a process index is needed, not here: the CLI checks a
# workdir before it imports JAX, so a bad one is one line in well under a second.


def check_writable(path: str | Path, what: str = "workdir") -> None:
    """A WorkdirError unless ``path`` (or the nearest existing parent, where it will
    be created) is a writable directory: checked before anything is computed."""
    p = Path(path).absolute()
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WorkdirError(f"{what} {str(path)!r}: {existing} is not a directory")
    try:  # a real write: os.access says yes to root on files it cannot write
        probe = existing / f".gen_jax_write_probe_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise WorkdirError(f"{what} {str(path)!r} is not writable ({existing}: {e.strerror}): "
                           "use another --workdir") from None


def write_atomic(path: str | Path, write) -> None:
    """``write(tmp_path)`` then a rename onto ``path``: a failure or a kill never leaves
    half a file, and the old file stays until the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class WorkdirLock:
    """An exclusive ``flock`` on ``workdir/.lock`` (``.lock.p<k>`` for process k > 0).

    Raises:
      WorkdirError: another process holds it; the message names its pid and host.
    """

    def __init__(self, workdir: str | Path):
        import jax

        k = jax.process_index()
        self.path = Path(workdir) / (".lock" if k == 0 else f".lock.p{k}")
        self._fd = None

    def __enter__(self) -> "WorkdirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise WorkdirError(f"workdir {str(self.path.parent)!r} is in use by another training "
                               f"process ({holder}): wait for it to finish or stop it, or use "
                               "another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock; the file stays (harmless)
            self._fd = None


def remove_if_unused(workdir: Path, created: bool) -> None:
    """Removes a workdir this command created if it holds nothing but our own empty
    scaffolding (a lock file, an empty checkpoints/): a failed first run leaves no
    empty workdir behind. Never removes a file with content."""
    import jax

    if not created or jax.process_index() != 0 or not workdir.is_dir():
        return
    for p in workdir.rglob("*"):
        if p.is_file() and not p.name.startswith(".lock"):
            return
    shutil.rmtree(workdir, ignore_errors=True)
