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

import json
import os
import re
import stat
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


# ---------------------------------------------------------------------- reading
# Files from strangers (a downloaded config.json, vocab.json, a checkpoint) are read only
# when they are regular files, and JSON and text only up to a size: a FIFO would block
# the reader forever, /dev/zero would fill memory, and a 200 MB "config" is not one.
MAX_JSON_BYTES = 64 * 2**20
MAX_TEXT_BYTES = 64 * 2**20


def check_regular_file(path: str | os.PathLike, where: str, what: str = "file",
                       fix: str = "check the path") -> os.stat_result:
    """The `os.stat` of `path` if it is a regular file (a symlink to one is fine); else an
    error naming what it is instead: missing, a dangling or looping link, a folder, a
    FIFO, a device or a socket. Nothing is opened, so a FIFO cannot block us.

        >>> check_regular_file("/dev/zero", "load")
        Traceback (most recent call last):
        ValueError: load: '/dev/zero' is a character device, not a regular file. Check the path
    """
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        dangling = os.path.islink(path)
        raise op_error(where, f"no {what} at '{path}'" + (
            f" (it is a symbolic link to '{os.readlink(path)}', which does not exist)"
            if dangling else ""), FileNotFoundError, fix) from None
    except OSError as error:      # ELOOP (a link loop), ENAMETOOLONG, EACCES, ...
        raise op_error(where, f"cannot reach the {what} '{path}': {error.strerror}",
                       OSError, fix) from None
    if stat.S_ISREG(info.st_mode):
        return info
    kinds = {stat.S_ISDIR: ("a folder", IsADirectoryError),
             stat.S_ISFIFO: ("a FIFO (named pipe)", ValueError),
             stat.S_ISCHR: ("a character device", ValueError),
             stat.S_ISBLK: ("a block device", ValueError),
             stat.S_ISSOCK: ("a socket", ValueError)}
    kind, error_type = next(((name, kind) for test, (name, kind) in kinds.items()
                             if test(info.st_mode)), ("not a regular file", ValueError))
    raise op_error(where, f"'{path}' is {kind}, not a regular file", error_type, fix)


def open_regular_file(path: str | os.PathLike, where: str, what: str = "file",
                      fix: str = "check the path"):
    """`path` opened for binary reading, refused unless it is a regular file. The check
    is made again on the open file (O_NONBLOCK: a FIFO swapped in meanwhile cannot
    block the open), so nothing but a regular file is ever read."""
    check_regular_file(path, where, what, fix)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise op_error(where, f"cannot open the {what} '{os.fspath(path)}': "
                       f"{error.strerror}", OSError, fix) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise op_error(where, f"'{os.fspath(path)}' is not a regular file", ValueError, fix)
    return os.fdopen(fd, "rb")


def read_bytes_capped(path: str | os.PathLike, where: str, limit: int,
                      what: str = "file", fix: str = "check the path") -> bytes:
    """The bytes of the regular file `path`, refused (before reading) when it holds more
    than `limit` bytes."""
    with open_regular_file(path, where, what, fix) as file:
        data = file.read(limit + 1)   # the file may grow after the check: read at most this
    if len(data) > limit:
        size = max(len(data), os.stat(path).st_size)
        raise op_error(where, f"'{os.fspath(path)}' holds {size:,} bytes, more than the "
                       f"{limit:,} a {what} may have here", ValueError,
                       f"check that it is the {what} you meant")
    return data


def read_text_capped(path: str | os.PathLike, where: str, limit: int = MAX_TEXT_BYTES,
                     what: str = "text file", errors: str = "strict",
                     fix: str = "check the path") -> str:
    """The UTF-8 text of the regular file `path`, at most `limit` bytes. With
    errors="strict", invalid UTF-8 is refused naming its byte offset and line."""
    data = read_bytes_capped(path, where, limit, what, fix)
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise op_error(where, f"'{os.fspath(path)}' is not UTF-8 text: byte "
                       f"{data[error.start]:#04x} at offset {error.start:,} (line {line}) "
                       f"{error.reason}", ValueError,
                       f"save the {what} as UTF-8") from None


def read_json_capped(path: str | os.PathLike, where: str, limit: int = MAX_JSON_BYTES,
                     what: str = "JSON file", fix: str = "check the path"):
    """The parsed JSON of the regular file `path` (at most `limit` bytes), or one error
    naming the file: not UTF-8, not JSON, or nested too deeply for Python to parse."""
    text = read_text_capped(path, where, limit, what, fix=fix)
    try:
        return json.loads(text)
    except RecursionError:
        raise op_error(where, f"'{os.fspath(path)}' nests its JSON too deeply to read",
                       ValueError, f"check that it is the {what} you meant") from None
    except ValueError as error:
        raise op_error(where, f"'{os.fspath(path)}' is not valid JSON ({error})",
                       ValueError, f"download or write the {what} again") from None
