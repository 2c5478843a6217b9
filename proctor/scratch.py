"""A job's `/data` on the worker's host: a folder capped in size that outlives the container.

The folder is a tmpfs mounted by the worker (which drives the Docker engine and so runs
as root) and bind-mounted into the container: writes past the cap fail with ENOSPC,
the host disk is never touched, and `perf.json` is still there after the container
exits (a tmpfs *volume* of the engine would be unmounted, and emptied, at exit). The
pages a job writes are charged to its own memory limit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from proctor import exceptions

OUTPUT_DIR_MODE = 0o1777  # the job's uid is not known on the host; sticky like /tmp
MNT_DETACH = 2
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount_tmpfs(path: Path, size_bytes: int) -> None:
    options = f"size={size_bytes},mode={OUTPUT_DIR_MODE:o}".encode()
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if _libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", flags, options) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))


def _unmount(path: Path) -> None:
    if _libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # not mounted: nothing to undo
            raise OSError(code, os.strerror(code), str(path))


@contextmanager
def output_dir(path: Path, *, max_bytes: int, capped: bool = True) -> Iterator[Path]:
    """Create the job's output folder (a size-capped tmpfs unless `capped` is off)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    mounted = False
    try:
        if capped:
            try:
                _mount_tmpfs(path, max_bytes)
            except OSError as exc:
                raise exceptions.SandboxUnavailable(
                    f"cannot cap the job's /data folder ({exc.strerror}): run the worker as "
                    "root, or set PROCTOR_OUTPUT_CAP=false to accept an uncapped /data"
                ) from exc
            mounted = True
        path.chmod(OUTPUT_DIR_MODE)
        yield path
    finally:
        if mounted:
            _unmount(path)
        shutil.rmtree(path, ignore_errors=True)
