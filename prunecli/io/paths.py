"""Where outputs go: the checks made before any work (DESIGN §1 "never lose data").

One check, :func:`check_outputs`, guards every command: it gets every path the command reads and
every path it writes (``-o``, ``--report``) and refuses, before any work, a write that would
replace, contain or lie inside something read, an existing path without ``--force``, and a path
that cannot be written. The writers (``atomic.atomic_output``, ``checkpoint.atomic_folder``) then
replace an existing path only where that check allowed it (:func:`may_replace`); a path that
appeared while prunecli was writing is never replaced silently (``atomic.rename_new``).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prunecli.errors import BadInput

STDIO = "-"
# a file or folder that may make up a model folder prunecli wrote (the shards, the index and
# the companions of checkpoint.py): --force replaces such a folder, never one holding more
OUTPUT_FOLDER_SUFFIXES = (
    ".safetensors",
    ".json",
    ".txt",
    ".model",
    ".tiktoken",
    ".py",
    ".md",
    ".jinja",
)


@dataclass(frozen=True)
class Target:
    """A path a command writes: its ``-o`` (a folder when the input is one) or ``--report``."""

    path: str
    option: str = "-o"
    folder: bool = False

    @property
    def what(self) -> str:
        return f"output {self.path}" if self.option == "-o" else f"{self.option} {self.path}"


# the targets this run's check allowed to replace (--force): the writers consult it
_replaceable: set[str] = set()


def default_output(model: str, suffix: str = ".pruned.safetensors") -> str:
    """``model.safetensors`` -> ``model.pruned.safetensors`` beside it (``model.onnx`` ->
    ``model.pruned.onnx``: ONNX in, ONNX out); stdin input -> stdout."""
    if model == STDIO:
        return STDIO
    path = named_path(model)
    if path.is_dir():  # a pruned folder goes beside it; scores of a folder are one file
        tail = ".pruned" if suffix == ".pruned.safetensors" else suffix
        return str(path.with_name(path.name + tail))
    if path.suffix == ".onnx" and suffix == ".pruned.safetensors":
        suffix = ".pruned.onnx"
    return str(path.with_name(path.stem + suffix))


def named_path(model: str) -> Path:
    """``model`` as a path with a real last name: ``.``, ``..`` and ``/`` name no file, so an
    output named after them would land inside the input; those are resolved first."""
    path = Path(model)
    if path.name in ("", ".", ".."):
        return path.resolve()
    return path


def check_outputs(
    reads: Sequence[tuple[str, str | os.PathLike[str] | None]],
    targets: Sequence[Target],
    force: bool,
) -> None:
    """Refuse, before any work, every write that could lose data or land nowhere.

    ``reads``: ``(label, path)`` for everything the command reads (``("input", model)``,
    ``("--data", data)``, ...); None, ``-`` and names that are not paths are skipped. A folder
    read protects every entry in it (a shard or companion may be a link to elsewhere). A target
    may not be, contain or lie inside anything read, the current folder, or another target.
    """
    _replaceable.clear()
    protected = _expand(reads)
    source_folder = next(
        (Path(p) for label, p in reads if label == "input" and p and is_dir(p)), None
    )
    here = os.path.realpath(os.getcwd())
    written: list[tuple[Target, str]] = []
    for target in targets:
        if target.path == STDIO:
            _check_stdout()
            continue
        where = os.path.realpath(target.path)
        for same_only in (True, False):  # "is config.json" says more than "lies inside"
            for label, shown, path, st, top in protected:
                _refuse_overlap(target, where, label, shown, path, st, top, same_only)
        if _inside(here, where):
            raise BadInput(
                f"{target.what} is or holds the current folder",
                f"choose another path with {target.option}",
            )
        for other, other_where in written:
            relation = _relation(where, other_where)
            if relation:
                raise BadInput(
                    f"{target.what} {relation} {other.what}",
                    f"choose another path with {target.option}",
                )
        _check_target(target, force, source_folder)
        written.append((target, where))
    if force:
        _replaceable.update(where for _, where in written)


def _expand(
    reads: Sequence[tuple[str, str | os.PathLike[str] | None]],
) -> list[tuple[str, str, str, os.stat_result | None, bool]]:
    """``(label, shown, realpath, stat, top)`` for each read path and each entry of a read folder."""
    out = []
    for label, source in reads:
        if source is None or str(source) == STDIO or not os.path.lexists(source):
            continue
        source = str(source)
        out.append((label, source, os.path.realpath(source), _stat(source), True))
        if os.path.isdir(source):
            try:
                names = sorted(os.listdir(source))
            except OSError:  # unreadable: the command's reader says so, with its own words
                names = []
            for name in names:
                shown = os.path.join(source, name)
                out.append((label, shown, os.path.realpath(shown), _stat(shown), False))
    return out


def _relation(path: str, other: str) -> str | None:
    if path == other:
        return "is the same path as"
    if _inside(path, other):
        return "lies inside"
    return "holds" if _inside(other, path) else None


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _inside(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies under it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _refuse_overlap(
    target: Target,
    where: str,
    label: str,
    shown: str,
    path: str,
    st: os.stat_result | None,
    top: bool,
    same_only: bool,
) -> None:
    hint = f"choose a path outside the input with {target.option}"
    mine = _stat(target.path)
    same = mine is not None and st is not None and os.path.samestat(mine, st)
    kind = "folder" if st is not None and stat.S_ISDIR(st.st_mode) else "file"
    given = "" if label == "input" else f" given to {label}"
    if same or where == path:
        if top:
            raise BadInput(f"{target.what} is the input {kind}{given}", hint)
        raise BadInput(f"{target.what} is {shown}, part of the input folder{given}", hint)
    if same_only:
        return
    if _inside(path, where):
        raise BadInput(f"{target.what} holds the input {shown}{given}", hint)
    if kind == "folder" and _inside(where, path):
        raise BadInput(f"{target.what} lies inside the input folder {shown}{given}", hint)


def _check_stdout() -> None:
    if sys.stdout is None:  # fd 1 was closed when Python started
        raise BadInput("could not write standard output: it is closed")
    if sys.stdout.isatty():
        raise BadInput("refusing to write a binary model to the terminal", "pipe or redirect it")


def is_dir(path: str | os.PathLike[str]) -> bool:
    return str(path) != STDIO and os.path.isdir(path)


def _check_target(target: Target, force: bool, source: Path | None = None) -> None:
    """The target alone: its folder exists and takes files; an existing path needs --force.

    An existing folder is replaced (--force) only when prunecli wrote it from a folder like
    ``source``: see :func:`_prunecli_folder`."""
    path = Path(target.path)
    if not target.folder and target.path.endswith(("/", os.sep)):
        raise BadInput(
            f"{target.what} is a folder path; this output is a file",
            f"name the file, e.g. {target.option} {target.path.rstrip('/' + os.sep)}.safetensors",
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"output folder {folder} does not exist")
    limit = _name_max(folder)
    if len(os.fsencode(path.name)) > limit:
        short = target.path if len(target.path) <= 60 else target.path[:40] + "…"
        raise BadInput(
            f"{target.option} {short}: the file name is {len(os.fsencode(path.name))} bytes, "
            f"more than the {limit} this file system allows",
            "choose a shorter name",
        )
    if not os.access(folder, os.W_OK | os.X_OK) or not _can_create_in(folder):
        raise BadInput(f"output folder {folder} is not writable")
    if not os.path.lexists(path):
        return
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode) and os.path.exists(path):
        # replacing would swap the link itself for a file (/dev/stdout as root): never
        raise BadInput(
            f"{target.what} is a link to {os.path.realpath(path)}",
            f"name the path itself with {target.option}",
        )
    if stat.S_ISDIR(mode) and not target.folder:
        raise BadInput(f"{target.what} is a folder", f"pass a file path with {target.option}")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        raise BadInput(
            f"{target.what} is not a regular file (a device, pipe or socket)",
            "prunecli writes files only; choose another path",
        )
    if target.folder and stat.S_ISREG(mode):
        raise BadInput(f"{target.what} is a file, and the input is a folder", "name a folder")
    if not force:
        raise BadInput(f"{target.path} already exists", "pass --force to replace it")
    if target.folder and stat.S_ISDIR(mode) and not _prunecli_folder(path, source):
        raise BadInput(
            f"{target.what} holds files prunecli did not write; --force replaces only a "
            "folder that prunecli wrote",
            "choose another path, or remove that folder yourself",
        )


def _prunecli_folder(folder: Path, source: Path | None) -> bool:
    """Whether replacing ``folder`` loses only what this run writes again: it is empty, or it
    holds only regular files named like files of the input folder ``source`` (shards, index,
    config, companions), one of them a safetensors file prunecli wrote (``prunecli.version``)."""
    from prunecli.io import safetensors as st

    entries = list(folder.iterdir())
    names = {e.name for e in source.iterdir()} if source is not None else set()
    if any(not e.is_file() or e.is_symlink() or e.name not in names for e in entries):
        return False
    if any(not e.name.endswith(OUTPUT_FOLDER_SUFFIXES) for e in entries):
        return False
    shards = [e for e in entries if e.suffix == ".safetensors"]
    for shard in shards:
        try:
            if "prunecli.version" in st.read_header_file(shard).metadata:
                return True
        except BadInput:
            continue
    return not entries


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _can_create_in(folder: Path) -> bool:
    """os.access says yes to root and misses read-only mounts: create the kind of file we will."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".prunecli-probe.", suffix=".tmp"):
            return True
    except OSError:
        return False


def may_replace(target: Path) -> bool:
    """Whether this run's check allowed replacing ``target`` (--force)."""
    return os.path.realpath(target) in _replaceable
