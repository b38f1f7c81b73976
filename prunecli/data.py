"""Labelled data for data-driven criteria and training (DESIGN §6).

``--data`` names one of: a ``.npz`` or ``.safetensors`` file with arrays ``x`` and ``y`` (and
optionally ``x_test``, ``y_test``); a folder of images in class subfolders; ``module:callable``
(the user's own code, imported because they asked for it); or a built-in set that is generated
or packaged locally (``mnist1d``, ``digits``). Nothing is ever downloaded.

Every source ends in :func:`from_arrays`, the one place that checks a data set: samples as
float32 tensors ``(N, *sample_shape)``, labels as int64 class indices ``(N,)``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os
import random
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunecli.errors import BadInput, PrunecliError, Unsupported

DEFAULT_BATCH_SIZE = 128
DEFAULT_BATCHES = 1
BUILTINS = ("mnist1d", "digits")
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_GRAY_MODES = frozenset({"1", "L", "LA", "I;16", "I;16L", "I;16B"})
_CALLABLE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_SPLITS = ("x", "y", "x_test", "y_test")

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Dataset:
    """Labelled samples: ``x`` float32 ``(N, *sample_shape)``, ``y`` int64 class indices ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    name: str = "data"  # what the user passed as --data, for messages

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """1 + the largest label in either split."""
        labels = [self.y] if self.y_test is None else [self.y, self.y_test]
        return max(int(t.max()) for t in labels) + 1

    def batches(
        self, batch_size: int, count: int, seed: int = 0, balanced: bool = False, start: int = 0
    ) -> Iterator[Batch]:
        """Batches ``start`` … ``start + count − 1`` of a deterministic stream of training batches.

        The stream depends on ``seed`` only (never on global random state). Plain batches walk
        through seeded permutations of the samples, epoch after epoch, without repeating a sample
        inside a batch. ``balanced`` batches take the same number of samples from every class
        (±1; a small class gives all it has and the others make up the rest), as GraSP's
        reference does. A batch holds ``min(batch_size, N)`` samples.
        """
        size = min(batch_size, len(self))
        if balanced:
            rows = _balanced_rows(self.y, size, seed, start + count)
        else:
            rows = _shuffled_rows(len(self), size, seed, start + count)
        for index, batch_rows in enumerate(rows):
            if index >= start:
                yield self.x[batch_rows], self.y[batch_rows]


def _rng(*key: int) -> np.random.Generator:
    """A generator for one purpose, fixed by ``key`` (negative seeds are folded into 64 bits)."""
    return np.random.default_rng([k % 2**64 for k in key])


def _shuffled_rows(n: int, size: int, seed: int, count: int) -> Iterator[torch.Tensor]:
    per_epoch = n // size
    order = None
    for index in range(count):
        epoch, slot = divmod(index, per_epoch)
        if slot == 0:
            order = torch.from_numpy(_rng(seed, 0, epoch).permutation(n))
        yield order[slot * size : (slot + 1) * size]


def _balanced_rows(y: torch.Tensor, size: int, seed: int, count: int) -> Iterator[torch.Tensor]:
    classes = torch.unique(y).tolist()
    streams = {c: _ClassStream(torch.nonzero(y == c).flatten(), seed, c) for c in classes}
    sizes = {c: len(streams[c].rows) for c in classes}
    for index in range(count):
        quotas = _quotas(sizes, size, _rng(seed, 2, index))
        yield torch.cat([streams[c].take(quotas[c]) for c in classes])


class _ClassStream:
    """One class's samples in seeded permutations; a batch never straddles two of them."""

    def __init__(self, rows: torch.Tensor, seed: int, label: int) -> None:
        self.rows, self.seed, self.label = rows, seed, label
        self.epoch, self.position, self.order = -1, len(rows), rows

    def take(self, n: int) -> torch.Tensor:
        if self.position + n > len(self.rows):
            self.epoch += 1
            permutation = _rng(self.seed, 1, self.label, self.epoch).permutation(len(self.rows))
            self.order, self.position = self.rows[torch.from_numpy(permutation)], 0
        self.position += n
        return self.order[self.position - n : self.position]


def _quotas(sizes: dict[int, int], size: int, rng: np.random.Generator) -> dict[int, int]:
    """Split ``size`` over the classes as evenly as their sizes allow; the remainder goes to
    classes in a seeded random order."""
    quotas = dict.fromkeys(sizes, 0)
    left = size
    while left:
        open_classes = [c for c in sizes if quotas[c] < sizes[c]]
        share, extra = divmod(left, len(open_classes))
        lucky = set(rng.permutation(open_classes)[:extra].tolist())
        for c in open_classes:
            take = min(share + (c in lucky), sizes[c] - quotas[c])
            quotas[c] += take
            left -= take
    return quotas


def batch_options(options: Mapping[str, Any]) -> tuple[int, int]:
    """``(batches, batch_size)`` from a criterion's options (``--batches``, ``--batch-size``)."""
    batches = options.get("batches", DEFAULT_BATCHES)
    batch_size = options.get("batch_size", DEFAULT_BATCH_SIZE)
    for flag, value in (("--batches", batches), ("--batch-size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInput(f"{flag} must be a positive integer, got {value!r}")
    return batches, batch_size


# --- building and checking a data set -----------------------------------------------------


def from_arrays(
    x: Any, y: Any, x_test: Any = None, y_test: Any = None, name: str = "data"
) -> Dataset:
    """A checked :class:`Dataset` from arrays (numpy, torch or nested lists); BadInput if bad."""
    train_x, train_y = _samples(x, "x", name), _labels(y, "y", name)
    _check_pair(train_x, train_y, "x", "y", name)
    if (x_test is None) != (y_test is None):
        given, missing = ("x_test", "y_test") if y_test is None else ("y_test", "x_test")
        raise BadInput(f"--data {name} has {given} but no {missing}", "give both or neither")
    test_x = test_y = None
    if x_test is not None:
        test_x, test_y = _samples(x_test, "x_test", name), _labels(y_test, "y_test", name)
        _check_pair(test_x, test_y, "x_test", "y_test", name)
        if test_x.shape[1:] != train_x.shape[1:]:
            raise BadInput(
                f"--data {name}: x_test samples have shape {list(test_x.shape[1:])}, "
                f"x samples {list(train_x.shape[1:])}"
            )
    return Dataset(train_x, train_y, test_x, test_y, name)


def _as_tensor(value: Any, key: str, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"--data {name}: {key} is not an array ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise BadInput(f"--data {name}: {key} must be numeric, got {array.dtype} values")
    return torch.from_numpy(np.ascontiguousarray(array))


def _samples(value: Any, key: str, name: str) -> torch.Tensor:
    x = _as_tensor(value, key, name)
    if x.is_complex() or x.dtype == torch.bool:
        raise BadInput(f"--data {name}: {key} must hold real numbers, got {x.dtype}")
    if x.dim() < 2:
        raise BadInput(
            f"--data {name}: {key} has shape {list(x.shape)}; it needs a batch dimension "
            "and a sample shape, e.g. [N, 40]"
        )
    x = x.to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise BadInput(f"--data {name}: {key} contains NaN or infinite values")
    return x


def _labels(value: Any, key: str, name: str) -> torch.Tensor:
    y = _as_tensor(value, key, name)
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise BadInput(
            f"--data {name}: {key} has shape {list(y.shape)}; labels are one class index "
            "per sample, shape [N]",
            "for one-hot labels pass y.argmax(1)",
        )
    if y.is_floating_point():
        bad = ~torch.isfinite(y) | (y != torch.round(y))
        if bool(bad.any()):
            raise BadInput(
                f"--data {name}: {key} must hold integer class indices; found {y[bad][0].item()}"
            )
    y = y.to(torch.int64)
    if y.numel() and int(y.min()) < 0:
        raise BadInput(
            f"--data {name}: {key} must hold class indices 0, 1, …; found {int(y.min())}"
        )
    return y


def _check_pair(x: torch.Tensor, y: torch.Tensor, x_key: str, y_key: str, name: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise BadInput(
            f"--data {name}: {x_key} has {x.shape[0]} samples but {y_key} has {y.shape[0]} labels"
        )
    if x.shape[0] == 0:
        raise BadInput(f"--data {name}: {x_key} is empty (no samples)")


# --- sources ------------------------------------------------------------------------------


def load_data(spec: str) -> Dataset:
    """The data set ``spec`` names: a built-in, a file, an image folder, or ``module:callable``."""
    if spec in BUILTINS:  # reserved: a folder of that name is ./mnist1d
        return _builtin(spec)
    path = Path(spec)
    if os.path.lexists(spec):  # a path: say why it cannot be read (loop, FIFO, dangling link)
        from prunecli.io.inputs import check_input

        if stat.S_ISDIR(check_input(path, f"--data {spec}", folder=True).st_mode):
            return load_image_folder(path, spec)
        return _load_file(path, spec)
    if _CALLABLE_SPEC.match(spec):
        return _load_callable(spec)
    if path.suffix or "/" in spec or "\\" in spec:
        raise BadInput(f"--data {spec} does not exist")
    raise BadInput(
        f"--data {spec!r} is not a file, a folder, module:callable or a built-in data set",
        f"built-ins: {', '.join(BUILTINS)}",
    )


def _load_file(path: Path, spec: str) -> Dataset:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _read_npz(path, spec)
    elif suffix == ".safetensors":
        from prunecli.io import safetensors as st

        arrays = st.load_file(path)[0]
    else:
        raise BadInput(
            f"--data {spec}: cannot read {suffix or 'files without a suffix'}",
            "give a .npz or .safetensors file with arrays x and y, or an image folder",
        )
    for key in ("x", "y"):
        if key not in arrays:
            found = ", ".join(sorted(arrays)) or "nothing"
            raise BadInput(f"--data {spec} has no array {key!r} (found: {found})")
    return from_arrays(*(arrays.get(key) for key in _SPLITS), name=spec)


def _read_npz(path: Path, spec: str) -> dict[str, np.ndarray]:
    import zipfile

    try:
        _check_npz(path, spec)
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInput(f"--data {spec} is not a readable .npz file: {exc}") from None


def _check_npz(path: Path, spec: str) -> None:
    """Every array's size from its own header, checked before NumPy allocates it: each must
    match the bytes its zip entry holds, and all together must fit in memory. A few hundred
    bytes can otherwise declare terabytes, or a compressed entry expand a thousandfold."""
    import zipfile

    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                total += info.file_size
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                reader = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                    version, np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = reader(member, max_header_size=10_000)
                header = member.tell()
            name = info.filename[: -len(".npy")]
            if dtype.hasobject:
                raise BadInput(
                    f"--data {spec} is not a readable .npz file: array {name!r} holds Python "
                    "objects; prunecli does not unpickle them",
                    "save numeric arrays (e.g. x.astype('float32'))",
                )
            nbytes = math.prod(shape) * dtype.itemsize
            if header + nbytes != info.file_size:
                raise BadInput(
                    f"--data {spec} is not a readable .npz file: array {name!r} of shape "
                    f"{list(shape)} needs {nbytes} bytes, but its entry holds "
                    f"{max(info.file_size - header, 0)}"
                )
            total += nbytes
    memory = _memory_bytes()
    if memory is not None and total > memory:
        raise BadInput(
            f"--data {spec} expands to {total / 2**30:.1f} GiB, more than this machine's "
            f"memory ({memory / 2**30:.1f} GiB)"
        )


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def load_image_folder(root: Path, spec: str | None = None) -> Dataset:
    """Images in class subfolders (sorted names → labels 0, 1, …) as float CHW tensors in [0, 1].

    A folder holding just ``train`` and ``test`` (or ``val``) subfolders, each of class folders,
    gives the two splits, labelled by the training split's class names.
    """
    name = spec or str(root)
    splits = _subfolders(root)
    split_names = {p.name for p in splits}
    test_name = next((t for t in ("test", "val") if t in split_names), None)
    if test_name and split_names == {"train", test_name} and _subfolders(root / "train"):
        classes = [p.name for p in _subfolders(root / "train")]
        x, y = _read_images(root / "train", classes, name)
        unknown = sorted({p.name for p in _subfolders(root / test_name)} - set(classes))
        if unknown:
            raise BadInput(f"--data {name}: {test_name}/{unknown[0]} is not a class in train/")
        x_test, y_test = _read_images(root / test_name, classes, name)
        if x_test.shape[1:] != x.shape[1:]:
            raise BadInput(
                f"--data {name}: {test_name}/ images have shape {list(x_test.shape[1:])}, "
                f"train/ images {list(x.shape[1:])}"
            )
        return from_arrays(x, y, x_test, y_test, name)
    if not splits:
        raise BadInput(
            f"--data {name} has no class subfolders",
            "put each class's images in its own subfolder, e.g. cats/1.png, dogs/2.png",
        )
    x, y = _read_images(root, [p.name for p in splits], name)
    return from_arrays(x, y, name=name)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_images(root: Path, classes: list[str], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from PIL import Image
    except ImportError:
        raise Unsupported(
            "image folders need Pillow", "pip install 'prunecli[data]' (or pillow)"
        ) from None
    files, labels = [], []
    for label, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            continue  # a class absent from this split
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise BadInput(f"--data {name}: class folder {folder} has no images")
        files += found
        labels += [label] * len(found)
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                images.append(image.copy())
        except (OSError, ValueError) as exc:
            raise BadInput(f"--data {name}: cannot read image {file}: {exc}") from None
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        first = images[0].size
        other = next(i for i, image in enumerate(images) if image.size != first)
        raise BadInput(
            f"--data {name}: images differ in size: {files[0]} is {first[0]}x{first[1]}, "
            f"{files[other]} is {images[other].size[0]}x{images[other].size[1]}",
            "resize them to one size first",
        )
    gray = all(image.mode in _GRAY_MODES for image in images)
    x = np.stack([_image_array(image, gray) for image in images])
    return torch.from_numpy(x), torch.tensor(labels, dtype=torch.int64)


def _image_array(image: Any, gray: bool) -> np.ndarray:
    """One image as float32 CHW in [0, 1]."""
    if gray and image.mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.float32) / 65535.0
    else:
        array = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.float32) / 255.0
    return array[None] if gray else array.transpose(2, 0, 1)


def _load_callable(spec: str) -> Dataset:
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise BadInput(
            f"cannot import --data {spec}: {exc}",
            "the module must be importable: install it or add its folder to PYTHONPATH",
        ) from None
    if not callable(target):
        raise BadInput(f"--data {spec} is not callable")
    try:
        value = target()
    except PrunecliError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: report what it raised
        raise BadInput(f"--data {spec} raised {type(exc).__name__}: {exc}") from None
    return _from_value(value, spec)


def _from_value(value: Any, name: str) -> Dataset:
    """What a ``module:callable`` returned: a Dataset, a mapping with x, y, an (x, y) or
    (x, y, x_test, y_test) tuple, an object with .x and .y, or a torch dataset / loader."""
    if isinstance(value, Dataset):
        return from_arrays(value.x, value.y, value.x_test, value.y_test, name)
    if isinstance(value, Mapping):
        missing = [key for key in ("x", "y") if key not in value]
        if missing:
            raise BadInput(f"--data {name} returned a mapping without {missing[0]!r}")
        return from_arrays(*(value.get(key) for key in _SPLITS), name=name)
    if isinstance(value, tuple | list) and len(value) in (2, 4):
        return from_arrays(*value, name=name)
    if hasattr(value, "x") and hasattr(value, "y"):
        return from_arrays(
            value.x, value.y, getattr(value, "x_test", None), getattr(value, "y_test", None), name
        )
    if isinstance(value, torch.utils.data.Dataset | torch.utils.data.DataLoader):
        return _materialise(value, name)
    raise BadInput(
        f"--data {name} returned {type(value).__name__}",
        "return (x, y), {'x': ..., 'y': ...}, a prunecli.data.Dataset or a torch Dataset/DataLoader",
    )


def _materialise(source: Any, name: str) -> Dataset:
    """Every (x, y) pair of a torch Dataset or batch of a DataLoader, stacked in memory."""
    xs, ys = [], []
    loader = isinstance(source, torch.utils.data.DataLoader)
    items = iter(source) if loader else (source[i] for i in range(len(source)))
    for item in items:
        if not isinstance(item, tuple | list) or len(item) < 2:
            raise BadInput(f"--data {name}: items must be (x, y) pairs, got {type(item).__name__}")
        x, y = (torch.as_tensor(v) for v in item[:2])
        xs.append(x if loader else x.unsqueeze(0))
        ys.append(y.reshape(-1))
    if not xs:
        raise BadInput(f"--data {name} is empty (no samples)")
    return from_arrays(torch.cat(xs), torch.cat(ys), name=name)


# --- built-in data sets -------------------------------------------------------------------


def _builtin(name: str) -> Dataset:
    arrays = _builtin_arrays(name)
    return from_arrays(*(arrays[key].copy() for key in _SPLITS), name=name)


@functools.cache
def _builtin_arrays(name: str) -> dict[str, np.ndarray]:
    """Generated once per process: mnist1d takes about a second."""
    return _mnist1d() if name == "mnist1d" else _digits()


def _mnist1d() -> dict[str, np.ndarray]:
    """MNIST-1D (Greydanus 2020) made locally by ``mnist1d.data.make_dataset`` with its default
    arguments: 4000 training and 1000 test sequences of length 40, 10 classes. Its download path
    (``get_dataset``) is never used."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise Unsupported(
            "--data mnist1d needs the mnist1d package", "pip install 'prunecli[data]'"
        ) from None
    # make_dataset reseeds Python's and NumPy's global generators: leave them as they were
    with _global_random_state_kept():
        made = make_dataset(get_dataset_args())
    return {key: np.asarray(made[key]) for key in _SPLITS}


def _digits() -> dict[str, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: 1797 samples of 64 features in [0, 1] (x / 16),
    10 classes, split once by a fixed permutation into 1437 training and 360 test samples."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise Unsupported(
            "--data digits needs scikit-learn", "pip install 'prunecli[data]'"
        ) from None
    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1437], order[1437:]
    return {"x": x[train], "y": y[train], "x_test": x[test], "y_test": y[test]}


@contextlib.contextmanager
def _global_random_state_kept() -> Iterator[None]:
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


# --- data against a model -----------------------------------------------------------------


def check_fits(
    data: Dataset,
    module: torch.nn.Module,
    input_shape: tuple[int, ...] | None = None,
    batch_size: int | None = None,
    check_labels: bool = True,
) -> int:
    """Run one batch of ``data`` through ``module`` (eval mode, no gradients, state restored)
    and return the number of outputs; BadInput when the samples do not fit the model or the
    labels exceed its outputs."""
    rows = min(batch_size or DEFAULT_BATCH_SIZE, len(data))
    parameter = next(iter(module.parameters()), None)
    x = data.x[:rows]
    if parameter is not None:
        x = x.to(parameter.device, parameter.dtype if parameter.is_floating_point() else x.dtype)
    was_training = module.training
    set_mode(module, training=False)
    try:
        with torch.no_grad(), explain_forward_errors(data, input_shape, rows):
            output = module(x)
    finally:
        set_mode(module, was_training)
    outputs = logits_width(output)
    if check_labels:
        check_label_range(data, outputs)
    return outputs


def set_mode(module: torch.nn.Module, training: bool) -> None:
    """Train or eval mode where the module allows it: the graph of a loaded ``.pt2`` program
    has its mode baked in, and refuses to switch."""
    try:
        module.train(training)
    except NotImplementedError:
        pass


@contextlib.contextmanager
def explain_forward_errors(
    data: Dataset, input_shape: tuple[int, ...] | None, batch: int | None = None
) -> Iterator[None]:
    """Turn a forward pass that fails on ``data`` into one line naming both shapes."""
    try:
        yield
    except PrunecliError:
        raise
    except Exception as exc:  # noqa: BLE001 - shape errors come as many types
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        shape = list(data.sample_shape)
        if input_shape is not None and tuple(input_shape) == data.sample_shape and batch:
            raise BadInput(
                f"--data {data.name}: the model refused a batch of {batch} samples of shape "
                f"{shape} ({detail})",
                "a .pt2 program exported with a fixed batch size takes only that: "
                "pass --batch-size",
            ) from None
        expects = f", which expects {list(input_shape)}" if input_shape else ""
        raise BadInput(
            f"--data {data.name}: samples of shape {shape} do not fit the model{expects} "
            f"({detail})",
            "give data whose samples have the model's input shape",
        ) from None


def logits_width(output: Any) -> int:
    """The number of classes of a classifier's output ``(batch, classes)``."""
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise Unsupported(
            f"labelled data needs a model that outputs class scores [batch, classes]; it gave {got}"
        )
    return int(output.shape[1])


def check_label_range(data: Dataset, outputs: int) -> None:
    if data.num_classes > outputs:
        raise BadInput(
            f"--data {data.name} has labels up to {data.num_classes - 1} ({data.num_classes} "
            f"classes), but the model has {outputs} outputs",
            "give data with fewer classes, or a model with an output per class",
        )
