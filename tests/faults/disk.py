"""Real file-system faults for the file stores: tiny tmpfs mounts and an unprivileged child.

- ``tmpfs(path, size)`` mounts a small tmpfs (the test is skipped, with the reason,
  where ``mount`` is missing or not permitted) and always unmounts it afterwards;
  ``resize`` remounts it bigger or smaller, ``fill`` writes a ballast file that
  leaves a chosen number of bytes free.
- Root reads every file whatever its mode, so "unreadable" is made honest with
  ``as_unprivileged``: the code under test runs in a forked child that dropped
  root for the ``nobody`` user, where ``chmod 000`` means a real ``EACCES``
  from the kernel. ``shared_dir`` is a folder that child can reach and own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

__all__ = [
    "PAGE",
    "as_unprivileged",
    "data_files",
    "fill",
    "free_bytes",
    "give_to_unprivileged",
    "resize",
    "shared_dir",
    "tmpfs",
]

PAGE: Final = 4096  # tmpfs hands out space in pages
UNPRIVILEGED: Final = "nobody"


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False, timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount`` syntax, e.g. ``256k``) mounted at ``path`` for the block."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("the full-disk cases need mount(8) to make a small tmpfs")
    if os.geteuid() != 0:
        pytest.skip("the full-disk cases mount a small tmpfs, which needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        gone = subprocess.run(["umount", str(path)], capture_output=True, check=False, timeout=30)
        if gone.returncode != 0:  # something still holds a file: detach it anyway
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def resize(path: Path, size: str) -> None:
    """Remount the tmpfs at ``path`` with a new size (its files stay)."""
    done = _mount("-o", f"remount,size={size}", str(path))
    assert done.returncode == 0, done.stderr


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``path``."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(path: Path, leave: int) -> Path:
    """Write ``path/ballast`` so that about ``leave`` bytes (whole pages) stay free."""
    ballast = path / "ballast"
    size = max(free_bytes(path) - leave, 0)
    chunk = b"\0" * (64 * 1024)
    with open(ballast, "wb") as out:
        while size > 0:
            part = chunk[: min(size, len(chunk))]
            try:
                out.write(part)
                out.flush()
            except OSError:  # the last page went to a folder or an inode: full is full
                break
            size -= len(part)
    return ballast


def data_files(folder: Path) -> list[str]:
    """Stream data files (``*.jsonl``) in ``folder``; [] when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".jsonl")


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        pytest.skip(f"the unreadable-file case needs the OS user {UNPRIVILEGED!r}")


@contextlib.contextmanager
def shared_dir() -> Iterator[Path]:
    """A fresh folder under the system temp dir that the unprivileged user can reach."""
    if os.geteuid() != 0:
        pytest.skip("the unreadable-file case drops root in a child, so it must run as root")
    _nobody()
    path = Path(tempfile.mkdtemp(prefix="event-meter-faults-"))
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def give_to_unprivileged(root: Path) -> None:
    """``chown -R nobody`` the tree under ``root`` (the child processes as that user)."""
    user = _nobody()
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, user.pw_uid, user.pw_gid)


def as_unprivileged(body: Callable[[], Any]) -> Any:
    """Run ``body`` in a forked child that became ``nobody``; its JSON-able return value.

    An exception in the child comes back as an ``AssertionError`` carrying its traceback.
    """
    user = _nobody()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            out = orjson.dumps({"value": body()})
        except BaseException:
            out = orjson.dumps({"error": traceback.format_exc()})
        try:
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(out)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"child status {status:#x}"
    reply = orjson.loads(data)
    assert "error" not in reply, f"the unprivileged child failed:\n{reply['error']}"
    return reply["value"]
