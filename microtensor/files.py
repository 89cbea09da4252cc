"""Atomic writes: every file this project writes (checkpoints, weights, model directories,
pictures, player pages, notebooks) appears complete or not at all.

The bytes go to a temporary file in the target's folder, are flushed to disk, and the
temporary file is renamed over the target. A same-folder rename is atomic on POSIX and
Windows, so a crash or Ctrl-C mid-write leaves the old file or the new one, never half of
one.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> write_bytes_atomically(path, "hello\\n")
    >>> open(path).read()
    'hello\\n'

The rules every writer follows (docs/reference.md, "Files you write", says them to users):

- **Missing folders are created**, as `mkdir -p` would (with the umask's permissions).
- **A symlink is written through**: the file it points to is replaced, the link stays
  (as `open(path, "w")` does). A link that points at itself, directly or not, is refused.
- **The target keeps its permissions** (and its owner and group, where the writer may set
  them); a new file gets what `open()` would give it.
- **Refused, as `open(path, "w")` would refuse**: a read-only target (no write bit, say
  0444, even for root), one you may not write, a folder, and special files (a FIFO, a
  socket, a device), which a rename would replace.
- **Errors name the function, the path you gave and the fix**, never a temporary file.
- **Stray temporaries**: a temporary's name, `.NAME.PID.RANDOM.tmp`, carries its writer's
  process id, so the next write to the same target removes the leftovers of a writer
  that was killed (its process is gone) and never those of a write still running.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable

from .errors import op_error


def write_atomically(path: str | os.PathLike, write: Callable[[str], None], where: str,
                     example: str = "out.bin") -> None:
    """Call `write(temporary)` to fill a new temporary file beside `path` (given by its
    name, so writers that only take a file name can use it), then make it `path`.
    `where` names the public function in errors; `example` is a file name for their fix."""
    given = os.fspath(path)
    target, existing = prepare_target(given, where, example)
    folder, name = os.path.split(target)
    remove_leftover_temporaries(folder, name)
    temporary = temporary_name(folder, name)
    try:
        # O_EXCL with a random name: concurrent writers never share a temporary file.
        # Mode 0o666 lets the umask decide permissions, as open() does.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:
        raise cannot_write(where, given, folder, error) from None
    try:
        try:
            write(temporary)
            if existing is not None:
                keep_mode(temporary, existing)
            fd = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(fd)  # the data is on disk before the name points at it
            finally:
                os.close(fd)
            os.replace(temporary, target)
        except OSError as error:
            if getattr(error, "microtensor", False):
                raise
            raise cannot_write(where, given, None, error) from None
    except BaseException:  # KeyboardInterrupt too: never leave the temporary file
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    fsync_folder(folder)


def write_bytes_atomically(path: str | os.PathLike, data: str | bytes,
                           where: str = "write") -> None:
    """Write `data` (text is encoded as UTF-8) to `path` atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data

    def write(temporary: str) -> None:
        with open(temporary, "wb") as file:
            file.write(payload)
    write_atomically(path, write, where, os.path.basename(os.fspath(path)) or "out.bin")


# ---------------------------------------------------------------------- the target
def prepare_target(path: str | os.PathLike, where: str, example: str = "out.bin",
                   directory: bool = False) -> tuple[str, os.stat_result | None]:
    """(the real path a write to `path` replaces, its stat or None when it is new): links
    followed, the rules above checked, missing folders created. `directory=True` for a
    writer that replaces a whole directory (save_pretrained)."""
    given = os.fspath(path)
    target = resolve_target(given, where)
    return target, check_target(target, given, where, example, directory)


def resolve_target(path: str, where: str) -> str:
    """The absolute path a write to `path` replaces: through every symlink, to the file
    or folder it names (a dangling link names where it points, as open() would create)."""
    try:
        if os.path.lexists(path):
            return os.path.realpath(path, strict=True)
    except FileNotFoundError:
        pass                                    # a dangling link: write where it points
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise cannot_write(where, path, None, error) from None
        raise op_error(where, f"'{path}' is a symbolic link that leads back to itself "
                       "(a loop)", OSError, "remove the link, or point it at a file") from None
    return os.path.realpath(path)


def check_target(target: str, given: str, where: str, example: str = "out.bin",
                 directory: bool = False) -> os.stat_result | None:
    """Refuse what a write to `target` must not replace (a folder for a file, a file for
    a directory, special files, read-only targets); create its missing folders. Returns
    its stat, or None when it does not exist yet."""
    try:
        existing = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):   # make_folders says which part
        existing = None
    except OSError as error:
        raise cannot_write(where, given, None, error) from None
    if existing is not None:
        if directory and not stat.S_ISDIR(existing.st_mode):
            raise op_error(where, f"'{given}' is {kind_of(existing)}, not a directory",
                           FileExistsError, "give a directory name (it is created)")
        if not directory and stat.S_ISDIR(existing.st_mode):
            raise op_error(where, f"'{given}' is a folder", IsADirectoryError,
                           f"give a file name, e.g. os.path.join(folder, {example!r})")
        if not directory and not stat.S_ISREG(existing.st_mode):
            raise op_error(where, f"'{given}' is {kind_of(existing)}, not a regular file: "
                           "writing would replace it", OSError,
                           "give the path of a regular file")
        if is_read_only(target, existing):
            raise op_error(where, f"'{given}' is read-only (mode "
                           f"{stat.S_IMODE(existing.st_mode):04o}), so it is not replaced",
                           PermissionError, f"make it writable first (chmod u+w '{given}'), "
                           "or write to another path")
    make_folders(os.path.dirname(target), given, where)
    return existing


def check_writable(path: str | os.PathLike, where: str, example: str = "out.bin") -> None:
    """Fail now, before slow or stateful work (a layout, a backward pass), if a write to
    `path` would fail: the rules above, and a folder this process may not write into."""
    given = os.fspath(path)
    target, _ = prepare_target(given, where, example)
    folder = os.path.dirname(target)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise cannot_write(where, given, folder, PermissionError(errno.EACCES,
                                                                 os.strerror(errno.EACCES)))


def is_read_only(path: str, info: os.stat_result) -> bool:
    """No write bit at all (0444: read-only for everyone, root included), or not writable
    by this process: what `open(path, "w")` would refuse, for a user who is not root."""
    return not info.st_mode & 0o222 or not os.access(path, os.W_OK)


def kind_of(info: os.stat_result) -> str:
    """'a FIFO', 'a socket', ...: what an entry is, for errors."""
    mode = info.st_mode
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a file"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "a special file"


def make_folders(folder: str, given: str, where: str) -> None:
    """Create `folder` and its missing parents (the rule for every writer)."""
    if os.path.isdir(folder):
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise op_error(where, f"cannot create the folder '{folder}' for '{given}': a part "
                       "of it is a file", NotADirectoryError,
                       "choose a path whose folders are folders") from None
    except OSError as error:
        raise op_error(where, f"cannot create the folder '{folder}' for '{given}' "
                       f"({error.strerror})", type(error),
                       "choose a folder you can write to") from None


def cannot_write(where: str, given: str, folder: str | None, error: OSError) -> Exception:
    """Our error for an OSError met while writing `given` (never naming a temporary)."""
    reason = error.strerror or str(error)
    kind = type(error) if isinstance(error, OSError) else OSError
    if folder is not None and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return op_error(where, f"cannot write '{given}': its folder '{folder}' is not "
                        f"writable ({reason})", PermissionError,
                        f"write to a folder you can write to, or make this one writable "
                        f"(chmod u+w '{folder}')")
    return op_error(where, f"cannot write '{given}' ({reason})", kind,
                    "free some space or write elsewhere" if error.errno == errno.ENOSPC
                    else "check the path and its folder")


def keep_mode(path: str, existing: os.stat_result) -> None:
    """Give the new file or folder at `path` the permissions (and, where this process may
    set them, the owner and group) of the `existing` one it replaces."""
    info = os.lstat(path)
    if (info.st_uid, info.st_gid) != (existing.st_uid, existing.st_gid):
        try:
            os.chown(path, existing.st_uid, existing.st_gid)
        except OSError:
            pass        # only root may give a file away: it stays the writer's
    os.chmod(path, stat.S_IMODE(existing.st_mode))


# ---------------------------------------------------------------------- temporaries
_NAME_CHARS = 40   # of the target's name in a temporary's: 255 bytes is the usual limit


def temporary_name(folder: str, name: str, suffix: str = ".tmp") -> str:
    """A new `.NAME.PID.RANDOM.tmp` path beside `name` in `folder` (`suffix` ".old" for a
    directory moved aside). The process id tells a later writer whether it is stray."""
    return os.path.join(folder, f".{name[:_NAME_CHARS]}.{os.getpid()}."
                                f"{uuid.uuid4().hex[:12]}{suffix}")


def stray_temporaries(folder: str, name: str, suffix: str = ".tmp") -> list[str]:
    """The temporaries for `name` in `folder` whose writer process no longer exists. A
    write still running (in this process or another) is never listed. Empty where a
    process cannot be probed safely (Windows, where os.kill(pid, 0) would send Ctrl-C)."""
    if os.name != "posix":
        return []
    pattern = re.compile(re.escape(f".{name[:_NAME_CHARS]}.") + r"(\d+)\.[0-9a-f]{12}"
                         + re.escape(suffix))
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    return [os.path.join(folder, entry) for entry in sorted(entries)
            if (match := pattern.fullmatch(entry)) and not _process_exists(int(match[1]))]


def remove_leftover_temporaries(folder: str, name: str) -> None:
    """Delete what killed writes to `name` left in `folder` (files, or a save_pretrained's
    staging folders): those whose writer process no longer exists."""
    for path in stray_temporaries(folder, name):
        remove_entry(path)


def remove_entry(path: str) -> None:
    """Delete a file, link or folder tree; a link is removed, never followed."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
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


def fsync_folder(folder: str) -> None:
    """Persist a rename itself (POSIX); a no-op where folders cannot be opened."""
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
        microtensor.errors.InvalidValue: load: '/dev/zero' is a character device, not a regular file. Check the path
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
