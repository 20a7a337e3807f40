"""Files written whole or not at all, and what identifies a file's content.

``atomic_path`` / ``atomic_write`` are the one way the workspace writes a file: to a temporary name beside the
target (``.<name>.<pid><suffix>``, the pid lets a later run delete what a killed one left), then renamed over it,
so a crash never leaves a torn checkpoint, cache entry, manifest or ``prediction.csv``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Union

Writable = Union[bytes, str, Callable[[BinaryIO], Any]]


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renamed to ``path`` when the block ends normally, deleted when it
    raises. For writers that want a file name (``torch.save``, ``DataFrame.to_csv``, ``np.lib.format.open_memmap``).

    ``suffix`` ends the temporary name (e.g. ``.tmp.npy`` for writers that insist on an extension).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: Writable) -> Path:
    """Write ``data`` (bytes, text as UTF-8, or a function that writes to a binary file) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented, key-sorted JSON, written atomically."""
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def file_stamp(path: Any) -> str:
    """``size:mtime_ns`` of a file, '' when it cannot be read: what caches compare to notice a changed file."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# what a full disk looks like when the writer does not pass ENOSPC on: numpy's short write ("N requested and M
# written", no errno) and torch's zip writer ("unexpected pos", "failed writing file")
_FULL_DISK_TEXT = ("no space left on device", "disk quota exceeded", "requested and", "unexpected pos",
                   "failed writing file")


def is_disk_full(exc: BaseException) -> bool:
    """Does ``exc`` (or an exception it was raised from) say that a write found the disk full?"""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, (OSError, RuntimeError)) and any(t in str(exc).lower() for t in _FULL_DISK_TEXT):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def free_space(path: str | os.PathLike) -> str:
    """The free space on ``path``'s disk, for a message ('unknown' when it cannot be read)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
    except OSError:
        return "free space unknown"
