"""Files that never end up half-written: atomic whole-file writes, and JSON Lines read and appended line by line;
and trees of files walked and removed at any depth.

Whole files go to a temporary name in the same folder and are then renamed over the target (`os.replace` is
atomic on POSIX). Appends write one complete line at a time; a line torn by a crash is skipped by the reader
(and reported) and cut off before the next append, so it never glues itself to the next line. Temporary files a
killed run left behind are removed by `remove_stale_temporaries`.

Scraped repositories and what sandboxed code leaves are hostile trees: 1,200 nested folders, links to /etc/shadow,
loops, names that make paths longer than PATH_MAX. `walk_tree` and `remove_tree` never recurse (os.walk,
shutil.rmtree and Path.rglob raise RecursionError there), never follow a link, and work through descriptors
(one open at a time, climbing back with `..` checked against the folder it came from), so depth costs nothing.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp creates 0600; give the file the mode a plain open() would (0666 less the umask).
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Pretty JSON written atomically (stats.json and friends)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def json_line(item: Any) -> str:
    """One JSON Lines line (with its newline) for a dict or anything with `json_fields()` or `to_dict()`."""
    if hasattr(item, "json_fields"):
        data = item.json_fields()
    else:
        data = item.to_dict() if hasattr(item, "to_dict") else item
    return json.dumps(data, ensure_ascii=False, default=str) + "\n"


def write_jsonl(path: str | os.PathLike, items: Iterable[Any]) -> int:
    """Replace `path` atomically with one JSON line per item. Returns the count."""
    lines = [json_line(item) for item in items]
    atomic_write_text(path, "".join(lines))
    return len(lines)


def cut_torn_tail(path: str | os.PathLike) -> int:
    """Cut a last line that has no newline (what a crash in the middle of an append leaves), so the next append
    starts on a line of its own. Returns the number of bytes cut (0 when the file is whole or absent)."""
    try:
        with open(path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return 0
            end = _last_newline_end(handle, size)
            handle.truncate(end)
            return size - end
    except FileNotFoundError:
        return 0


def _last_newline_end(handle, size: int) -> int:
    """The offset just after the last newline of an open file (0 when it has none), read backwards in blocks."""
    position = size
    while position > 0:
        start = max(0, position - 65536)
        handle.seek(start)
        block = handle.read(position - start)
        found = block.rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


class JsonlAppender:
    """Appends complete lines to one JSONL file; the first append cuts a torn last line a crash left."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._checked = False

    def append(self, item: Any) -> None:
        """Append one complete line; a crash can lose at most this line."""
        if not self._checked:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cut = cut_torn_tail(self.path)
            if cut:
                log.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", self.path, cut)
            self._checked = True
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json_line(item))
            handle.flush()


def append_jsonl(path: str | os.PathLike, item: Any) -> None:
    """Append one complete line to `path` (a torn last line is cut first)."""
    JsonlAppender(path).append(item)


class JsonlLine(NamedTuple):
    """One non-blank line of a JSONL file: its number, its text, and either the object or why it is not one."""

    number: int
    text: str
    data: Optional[dict]
    error: Optional[str]


def iter_jsonl_lines(path: str | os.PathLike) -> Iterator[JsonlLine]:
    """Every non-blank line of a JSONL file, decoded where it is a JSON object (`error` says why where not)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            try:
                data = json.loads(raw.decode("utf-8"))
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            except (ValueError, UnicodeDecodeError) as exc:
                yield JsonlLine(number, text, None, f"{path}:{number}: malformed JSON line ({exc})")
                continue
            yield JsonlLine(number, text, data, None)


def report(on_error: Optional[Callable[[int, str], None]], number: int, message: str) -> None:
    """Send a bad line to `on_error(line_number, message)`, or log it as a warning when there is no callback."""
    on_error(number, message) if on_error else log.warning(message)


def iter_jsonl(path: str | os.PathLike, on_error: Optional[Callable[[int, str], None]] = None) -> Iterator[dict]:
    """Yield each line of a JSONL file as a dict. A malformed line (e.g. torn by a crash) is skipped and
    reported to `on_error(line_number, message)`, or logged as a warning when no callback is given."""
    for line in iter_jsonl_lines(path):
        if line.error:
            report(on_error, line.number, line.error)
        else:
            yield line.data


def remove_stale_temporaries(folder: str | os.PathLike, name: str) -> int:
    """Delete the temporary files (`.<name>.*.tmp`) that a killed run left beside `<folder>/<name>`, except those
    of a process that is still running. Returns how many were removed."""
    removed = 0
    for temporary in Path(folder).glob(f".{name}.*{TEMP_SUFFIX}"):
        if _owner_alive(temporary.name):
            continue
        temporary.unlink(missing_ok=True)
        removed += 1
    return removed


def _owner_alive(temporary_name: str) -> bool:
    """True when the name carries the pid of a live process (`.<name>.<pid>.tmp`, as `temporary_path` makes)."""
    middle = temporary_name.removesuffix(TEMP_SUFFIX).rsplit(".", 1)[-1]
    if not middle.isdigit() or int(middle) == os.getpid():
        return False
    try:
        os.kill(int(middle), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_path(path: str | os.PathLike) -> Path:
    """`<folder>/.<name>.<pid>.tmp`: where a file is written before it is renamed over `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


OWNERSHIP = ".triton-data.json"  # in an output folder: which stage wrote which of its files


class OutputFolder:
    """A stage's output folder, and the rule that a run never replaces a file it did not create: the files a
    stage writes are listed in the folder's `.triton-data.json` with the stage's name, and a run may replace only
    those. A folder written before that list existed is taken as the stage's own when `adopt(folder)` says so."""

    def __init__(self, folder: str | os.PathLike, stage: str, adopt: Optional[Callable[[Path], bool]] = None) -> None:
        self.folder, self.stage = Path(folder), stage
        self.owned = self._read()
        if not (self.folder / OWNERSHIP).exists() and adopt is not None and self.folder.is_dir() and adopt(self.folder):
            self.owned = {name: stage for name in os.listdir(self.folder) if not name.startswith(".")}

    def _read(self) -> dict:
        try:
            data = json.loads((self.folder / OWNERSHIP).read_text(encoding="utf-8"))
            return {str(k): str(v) for k, v in data.get("files", {}).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def foreign(self, names: Iterable[str]) -> list[str]:
        """The `names` that exist in the folder but are not files this stage wrote."""
        return [name for name in names if (self.folder / name).exists() and self.owned.get(name) != self.stage]

    def refuse_foreign(self, names: Iterable[str]) -> None:
        """FileExistsError naming the files among `names` that this run may not replace."""
        foreign = self.foreign(names)
        if foreign:
            raise FileExistsError(
                f"{self.folder} holds {', '.join(sorted(foreign))}, which {self.stage} did not write; it replaces "
                f"only its own files: choose another output folder")

    def claim(self, names: Iterable[str]) -> None:
        """Record `names` as this stage's files (written before they are, so a crash cannot orphan them)."""
        new = {name: self.stage for name in names if self.owned.get(name) != self.stage}
        if new:
            self.owned.update(new)
            atomic_write_json(self.folder / OWNERSHIP, {"files": dict(sorted(self.owned.items()))})


def first_object(path: Path) -> Optional[dict]:
    """The first JSON object line of a JSONL file, or None (missing, empty, not JSON)."""
    try:
        return next((line.data for line in iter_jsonl_lines(path) if line.data is not None), None)
    except OSError:
        return None


def claim_output(folder: str | os.PathLike, stage: str, names: Iterable[str],
                 adopt: Optional[Callable[[Path], bool]] = None) -> OutputFolder:
    """Make `folder`, refuse (FileExistsError) when one of `names` is there and not this stage's, and record
    `names` as this stage's files."""
    if Path(folder).exists() and not Path(folder).is_dir():
        raise NotADirectoryError(f"output {folder} exists and is not a folder")
    Path(folder).mkdir(parents=True, exist_ok=True)
    owned = OutputFolder(folder, stage, adopt)
    owned.refuse_foreign(names)
    owned.claim(names)
    return owned


# ------------------------------------------------------------------------------------------------ trees

_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeEntry(NamedTuple):
    """One entry of a tree: `folder_fd` is an open descriptor of the folder holding it (valid until the walk
    moves on: act on the entry with `dir_fd=folder_fd`), `stat` its lstat, `depth` 1 for what the root holds;
    `path` its path below the root, parts joined with "/"."""

    folder_fd: int
    name: str
    stat: os.stat_result
    depth: int
    path: str


def walk_tree(root: str | os.PathLike, enter: Optional[Callable[[TreeEntry], bool]] = None) -> Iterator[TreeEntry]:
    """Every entry under `root`, each folder's entries before what its subfolders hold, never following a link;
    with `enter`, only the subfolders for which it is true are walked into. A folder the caller removes or
    replaces meanwhile is skipped; OSError when `root` is no folder, or when a folder above moved while the walk
    was below it."""
    fd = _open_folder(os.fspath(root))
    levels = [_Level("", _identity(fd), [])]
    try:
        yield from _list_level(fd, levels, enter)
        while levels:
            if levels[-1].todo:
                name = levels[-1].todo.pop()
                child = _open_child(fd, name)
                if child is None:
                    continue
                os.close(fd)
                fd = child
                path = f"{levels[-1].path}/{name}" if levels[-1].path else name
                levels.append(_Level(path, _identity(fd), []))
                yield from _list_level(fd, levels, enter)
            else:
                levels.pop()
                if levels:
                    fd = _climb(fd, levels[-1].identity)
    finally:
        os.close(fd)


def remove_tree(path: str | os.PathLike, ignore_errors: bool = False) -> None:
    """Remove `path` and everything under it (a file or a link: just it), at any depth, never following a link;
    folders whose mode forbids listing them are opened up first. Nothing to do when it does not exist."""
    path = os.fspath(path)
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
        _remove_folder(path)
    except FileNotFoundError:
        return
    except OSError:
        if not ignore_errors:
            raise


class _Level(NamedTuple):
    path: str
    identity: tuple
    todo: list  # subfolder names not entered yet


def _identity(fd: int) -> tuple:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _open_folder(path: str, dir_fd: Optional[int] = None) -> int:
    """A descriptor of the folder `path` (not a link to one); a folder whose mode keeps this process out (what
    sandboxed code can leave) is opened up for its owner first, through a descriptor: never through a link."""
    try:
        return os.open(path, _FOLDER_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        handle = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if not stat.S_ISDIR(os.fstat(handle).st_mode):
                raise NotADirectoryError(path) from None
            _open_up(handle)
        finally:
            os.close(handle)
        return os.open(path, _FOLDER_FLAGS, dir_fd=dir_fd)


def _open_up(fd: int) -> None:
    """chmod 0700 the folder open as `fd` (the inode itself, by its /proc/self/fd entry), when allowed."""
    try:
        os.chmod(f"/proc/self/fd/{fd}", 0o700)
    except OSError:
        pass


def _open_child(fd: int, name: str) -> Optional[int]:
    """The subfolder `name` of the folder `fd`, or None when it is gone or no longer a folder."""
    try:
        return _open_folder(name, dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: replaced by a link
            return None
        raise


def _climb(fd: int, expected: tuple) -> int:
    """The parent of the folder `fd` (then closed), which must be the folder the walk came from."""
    parent = os.open("..", _FOLDER_FLAGS, dir_fd=fd)
    if _identity(parent) != expected:
        os.close(parent)
        raise OSError(f"a folder moved during the walk (expected {expected})")
    os.close(fd)
    return parent


def _list_level(fd: int, levels: list, enter: Optional[Callable[[TreeEntry], bool]]) -> Iterator[TreeEntry]:
    """The entries of the folder `fd` (the deepest of `levels`), in name order; the subfolders to walk into go
    to that level's todo list (in reverse: popped in name order)."""
    level, depth = levels[-1], len(levels)
    subfolders = []
    for name in sorted(os.listdir(fd)):
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        entry = TreeEntry(fd, name, info, depth, f"{level.path}/{name}" if level.path else name)
        yield entry
        if stat.S_ISDIR(info.st_mode) and (enter is None or enter(entry)):
            subfolders.append(name)
    level.todo.extend(reversed(subfolders))


def _remove_folder(path: str) -> None:
    """remove_tree of a folder: empty each folder on the way down, remove it on the way back up."""
    fd = _open_folder(path)
    levels = [(None, _identity(fd), _empty(fd))]
    try:
        while levels:
            name, identity, todo = levels[-1]
            if todo:
                child_name = todo.pop()
                child = _open_child(fd, child_name)
                if child is None:
                    _unlink_quietly(fd, child_name)
                    continue
                os.close(fd)
                fd = child
                levels.append((child_name, _identity(fd), _empty(fd)))
                continue
            levels.pop()
            if levels:
                fd = _climb(fd, levels[-1][1])
                os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _empty(fd: int) -> list:
    """Unlink everything but folders in the folder `fd` (opened up first: a 0500 folder keeps what it holds);
    returns its subfolders' names."""
    _open_up(fd)
    folders = []
    for name in os.listdir(fd):
        try:
            if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                folders.append(name)
            else:
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
    return folders


def _unlink_quietly(fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=fd)
    except OSError:
        pass


class Done:
    """The finished units of earlier runs, by key, read from one ledger or several (a sharded run's): one JSON
    object per line, the latest line of a key winning. `key` is the field that names a unit (a line without it as
    a string is passed over) or a function of the unit; `parse` turns a line's object into the unit (a typed
    record), None for a line that is not one."""

    def __init__(self, paths, key, parse: Optional[Callable[[Any], Any]] = None) -> None:
        self.paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(path) for path in paths]
        self.key, self.parse = key, parse
        self.entries: dict = {}
        for path in self.paths:
            for data in iter_jsonl(path) if path.is_file() else []:
                unit = parse(data) if parse is not None else data
                name = self.key_of(unit)
                if name is not None:
                    self.entries[name] = unit

    def key_of(self, unit: Any):
        if unit is None:
            return None
        if callable(self.key):
            return self.key(unit)
        name = unit.get(self.key) if isinstance(unit, dict) else None
        return name if isinstance(name, str) else None

    def get(self, name) -> Optional[Any]:
        return self.entries.get(name)

    def __contains__(self, name) -> bool:
        return name in self.entries

    def mark(self, entry: dict) -> None:
        """Add one finished unit to the (first) ledger, appended as one whole line, so a crash loses at most the
        unit in progress; it is kept as a line read back would be (parsed, by its key)."""
        unit = self.parse(entry) if self.parse is not None else entry
        name = self.key_of(unit)
        if name is None or not self.paths:
            raise ValueError(f"not a unit of this ledger (key {self.key!r}): {entry!r:.200}")
        append_jsonl(self.paths[0], entry)
        self.entries[name] = unit
