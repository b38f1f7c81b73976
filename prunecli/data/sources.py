"""Where a data set comes from: ``--data`` as a file, an image folder, code or a built-in set.

``--data`` names one of: a ``.npz`` or ``.safetensors`` file with arrays ``x`` and ``y`` (and
optionally ``x_test``, ``y_test``); a folder of images in class subfolders; ``module:callable``
(the user's own code, imported because they asked for it); or a built-in set that is generated
or packaged locally (``mnist1d``, ``digits``). Nothing is ever downloaded. Each ends in
:func:`prunecli.data.labelled.from_arrays`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import random
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunecli.data.labelled import Dataset, from_arrays
from prunecli.errors import BadInput, PrunecliError, Unsupported
from prunecli.io.npz import read_npz

BUILTINS = ("mnist1d", "digits")
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_GRAY_MODES = frozenset({"1", "L", "LA", "I;16", "I;16L", "I;16B"})
_CALLABLE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_SPLITS = ("x", "y", "x_test", "y_test")


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
        arrays = read_npz(path, spec)
    elif suffix == ".safetensors":
        from prunecli.io.load import load_file

        arrays = load_file(path)[0]
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
        "return (x, y), {'x': ..., 'y': ...}, a prunecli.data.labelled.Dataset or a torch Dataset/DataLoader",
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
