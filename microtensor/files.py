"""Atomic writes: every file this project writes (checkpoints, weights, pictures, player
pages, notebooks) appears complete or not at all.

The bytes go to a temporary file in the target's folder, are flushed to disk, and the
temporary file is renamed over the target. A same-folder rename is atomic on POSIX and
Windows, so a crash or Ctrl-C mid-write leaves the old file or the new one, never half of
one. The temporary file's name carries the writer's process id, so a later write can tell
the leftovers of a killed writer (its process is gone) from a write still running.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> write_bytes_atomically(path, "hello\\n")
    >>> open(path).read()
    'hello\\n'
"""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable

from .errors import op_error


def write_atomically(path: str | os.PathLike, write: Callable[[str], None], where: str,
                     example: str = "out.bin") -> None:
    """Call `write(temporary)` to fill a new temporary file beside `path` (given by its
    name, so writers that only take a file name can use it), then make it `path`.
    `where` names the public function in errors; `example` is a file name for their fix."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise op_error(where, f"'{path}' is a folder", IsADirectoryError,
                       f"give a file name, e.g. os.path.join(folder, {example!r})")
    if not os.path.isdir(folder):
        raise op_error(where, f"the folder of '{path}' does not exist", FileNotFoundError,
                       f"create it first: os.makedirs({folder!r}, exist_ok=True)")
    name = os.path.basename(path)
    remove_leftover_temporaries(folder, name)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    # O_EXCL with a random name: concurrent writers never share a temporary file.
    # Mode 0o666 lets the umask decide permissions, as open() does.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(temporary)
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:  # KeyboardInterrupt too: never leave the temporary file
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)


def write_bytes_atomically(path: str | os.PathLike, data: str | bytes,
                           where: str = "write") -> None:
    """Write `data` (text is encoded as UTF-8) to `path` atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data

    def write(temporary: str) -> None:
        with open(temporary, "wb") as file:
            file.write(payload)
    write_atomically(path, write, where, os.path.basename(os.fspath(path)) or "out.bin")


def remove_leftover_temporaries(folder: str, name: str) -> None:
    """Delete the temporary files that killed writes to `name` left in `folder`: those
    whose writer process no longer exists. A write still running (in this process or
    another) keeps its file. Skipped where a process cannot be probed safely (Windows,
    where os.kill(pid, 0) would send Ctrl-C)."""
    if os.name != "posix":
        return
    pattern = re.compile(re.escape(f".{name}.") + r"(\d+)\.[0-9a-f]{12}\.tmp")
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match and not _process_exists(int(match.group(1))):
            try:
                os.unlink(os.path.join(folder, entry))
            except OSError:
                pass  # another writer removed it first, or it is not ours to remove


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)          # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True              # it exists (another user's), or is not a pid: keep the file
    return True


def _fsync_folder(folder: str) -> None:
    """Persist the rename itself (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
