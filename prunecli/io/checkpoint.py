"""Safetensors checkpoints on disk: one file, a sharded set with its index, or a model folder.

A checkpoint is read through its headers only; tensor bytes are fetched on demand with
``io.inputs.read_into`` (``pread`` into a caller's buffer), so no command holds more of the model than it
asks for. Folders are what Hugging Face writes: ``config.json`` (the architecture), either
``model.safetensors`` or ``model.safetensors.index.json`` naming the shards, and tokenizer and
generation files that travel with the weights.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prunecli.errors import BadInput
from prunecli.io import safetensors as st
from prunecli.io.atomic import rename_new, temp_prefix, umask
from prunecli.io.inputs import check_input
from prunecli.io.jsonfile import read_json_file
from prunecli.io.paths import may_replace

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
CONFIG = "config.json"
# beside the weights in a Hugging Face folder: copied to a pruned folder as they are
_COMPANION_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".py", ".md", ".jinja")


@dataclass(frozen=True)
class Shard:
    path: Path
    header: st.Header

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def names(self) -> list[str]:
        """The tensors of this shard as a model holds them, in order: a bitmask shard's
        encoded tensors by their own names, not the ``.__bitmask__``/``.__values__`` stored."""
        from prunecli.io.bitmask import tensor_names

        return tensor_names(self.header, str(self.path))


@dataclass
class Checkpoint:
    """Where every tensor lives. ``folder`` is None for a lone ``.safetensors`` file."""

    source: str
    shards: list[Shard]
    folder: Path | None = None
    index_metadata: dict[str, object] | None = None  # the index's "metadata" (sharded only)
    config: dict[str, object] | None = None  # config.json of a Hugging Face folder
    companions: list[Path] = field(default_factory=list)  # files copied to a pruned folder

    @property
    def sharded(self) -> bool:
        return self.index_metadata is not None

    @property
    def metadata(self) -> dict[str, str]:
        return self.shards[0].header.metadata if self.shards else {}

    def entries(self) -> Iterator[tuple[str, Shard, st.TensorEntry]]:
        """Every tensor in order: shards in order, then each shard's header order."""
        for shard in self.shards:
            for name, entry in shard.header.entries.items():
                yield name, shard, entry

    @property
    def file_bytes(self) -> int:
        return sum(shard.file_bytes for shard in self.shards)


def is_folder(source: str) -> bool:
    return source != "-" and Path(source).is_dir()


def open_checkpoint(source: str) -> Checkpoint:
    """The checkpoint at ``source`` (a ``.safetensors`` file or a folder), headers validated."""
    path = Path(source)
    if stat.S_ISREG(check_input(path, source, folder=True).st_mode):
        return Checkpoint(source, [Shard(path, st.read_header_file(path))])
    config = _read_config(path)
    if os.path.lexists(path / INDEX):
        shards, metadata = _read_sharded(path)
    elif os.path.lexists(path / SINGLE):
        shards, metadata = [Shard(path / SINGLE, st.read_header_file(path / SINGLE))], None
    else:
        raise BadInput(
            f"{source} is a folder without {SINGLE} or {INDEX}",
            "pass a .safetensors file, or a folder saved by save_pretrained",
        )
    companions = sorted(
        p
        for p in path.iterdir()
        if p.suffix in _COMPANION_SUFFIXES and p.name != INDEX and _own_file(p, path)
    )
    return Checkpoint(source, shards, path, metadata, config, companions)


def _own_file(file: Path, folder: Path) -> bool:
    """A regular file of ``folder``, safe to copy into an output that may be shared: a link
    counts only when it resolves inside the folder, or into the blob store of the Hugging Face
    cache the folder is a snapshot of (``hub/models--x/snapshots/REV`` -> ``models--x/blobs``).
    A link elsewhere (``tokenizer.json -> ~/.ssh/...``) is not copied."""
    if not file.is_file():
        return False
    if not file.is_symlink():
        return True
    real = file.resolve()
    homes = [folder.resolve()]
    if folder.resolve().parent.name == "snapshots":
        homes.append(folder.resolve().parent.parent / "blobs")
    return any(real.parent == home or home in real.parents for home in homes)


def _read_config(folder: Path) -> dict[str, object] | None:
    file = folder / CONFIG
    if not os.path.lexists(file):
        return None
    config = read_json_file(file)
    if not isinstance(config, dict):
        raise BadInput(f"{file} must hold a JSON object")
    return config


def _read_sharded(folder: Path) -> tuple[list[Shard], dict[str, object]]:
    """Shards in the order the index first names them; every tensor listed once, where it is."""
    index_file = folder / INDEX
    index = read_json_file(index_file)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise BadInput(f"{index_file} has no weight_map of tensor names to shard files")
    names = sorted(set(weight_map.values()))
    shards = []
    for name in names:
        file = folder / name
        if Path(name).name != name:
            raise BadInput(f"{index_file} names shard {name!r} outside the folder")
        if not os.path.lexists(file):
            raise BadInput(f"{index_file} names shard {name}, which is missing from {folder}")
        shards.append(Shard(file, st.read_header_file(file)))
    seen: dict[str, str] = {}
    for shard in shards:  # duplicates first: the index can list a tensor in one place only
        for tensor in shard.header.entries:
            if tensor in seen:
                raise BadInput(
                    f"tensor {tensor!r} is in two shards: {seen[tensor]} and {shard.path.name}"
                )
            seen[tensor] = shard.path.name
    for shard in shards:
        for tensor in shard.header.entries:
            listed = weight_map.get(tensor)
            if listed != shard.path.name:
                where = f"lists it in {listed}" if listed else "does not list it"
                raise BadInput(
                    f"shard {shard.path.name} holds tensor {tensor!r}, but {INDEX} {where}"
                )
    missing = next((t for t in weight_map if t not in seen), None)
    if missing is not None:
        raise BadInput(f"{INDEX} lists tensor {missing!r} in {weight_map[missing]}, which lacks it")
    metadata = index.get("metadata") if isinstance(index.get("metadata"), dict) else {}
    return shards, dict(metadata)


def write_index(folder: Path, weight_map: dict[str, str], total_size: int, meta: dict) -> None:
    document = {"metadata": {**meta, "total_size": total_size}, "weight_map": weight_map}
    (folder / INDEX).write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def check_folder_output(output: str, source: str) -> None:
    """A folder in gives a folder out: refuse an output named like a file (the rest of the
    output's checks are io.paths.check_outputs', with ``Target(output, folder=True)``)."""
    if output == "-" or Path(output).suffix in (".safetensors", ".pt2", ".onnx"):
        raise BadInput(
            f"the input {source} is a folder, so the output is one too: -o {output} cannot be",
            "name a folder with -o, e.g. -o model-pruned/",
        )


@contextmanager
def atomic_folder(output: str) -> Iterator[Path]:
    """A temporary folder beside ``output``, renamed into place only when the block succeeds.

    An existing folder is replaced only where the output check allowed it (--force); one that
    appeared meanwhile is never replaced silently (atomic.rename_new)."""
    target = Path(os.path.abspath(output))  # "out/." and "out/" name the folder "out"
    try:
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    except OSError as exc:
        raise BadInput(f"cannot write {output}: {exc.strerror}") from None
    old: Path | None = None
    try:
        yield staging
        os.chmod(staging, 0o777 & ~umask())
        replace = may_replace(target)
        if replace and os.path.lexists(target):
            # the old folder goes only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(target) + "old.", dir=target.parent))
            os.replace(target, old / "replaced")
        try:
            rename_new(staging, target, output, replace=False)
        except BaseException:
            if old is not None:  # put the old one back: nothing was written
                os.replace(old / "replaced", target)
            raise
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BadInput(
            f"could not write {output}: {exc.strerror or exc}; nothing was written"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
