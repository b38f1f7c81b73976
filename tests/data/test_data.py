"""Data sources for --data (DESIGN §6): every source, the batch stream, and bad input."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from prunecli.data.labelled import (
    Dataset,
    batch_options,
    check_fits,
    from_arrays,
)
from prunecli.data.sources import load_data, load_image_folder
from prunecli.errors import BadInput, Unsupported


def random_arrays(n: int = 20, shape: tuple[int, ...] = (3, 4), classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)), np.arange(n) % classes


def refused(spec: str, *fragments: str) -> str:
    """load_data(spec) raises BadInput with a one-line message holding every fragment."""
    with pytest.raises(BadInput) as caught:
        load_data(spec)
    message = caught.value.message
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# --- files ---------------------------------------------------------------------------------


def test_npz_with_test_split(tmp_path: Path) -> None:
    x, y = random_arrays(20)
    x_test, y_test = random_arrays(6, seed=1)
    path = tmp_path / "train.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, notes=np.zeros(2))
    data = load_data(str(path))
    assert data.name == str(path) and len(data) == 20
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert data.sample_shape == (3, 4) and data.num_classes == 3
    assert torch.equal(data.x, torch.tensor(x, dtype=torch.float32))
    assert torch.equal(data.y, torch.tensor(y))
    assert torch.equal(data.x_test, torch.tensor(x_test, dtype=torch.float32))
    assert torch.equal(data.y_test, torch.tensor(y_test))


def test_safetensors_without_test_split(tmp_path: Path) -> None:
    x, y = random_arrays(12, shape=(5,), classes=4)
    path = tmp_path / "data.safetensors"
    save_file({"x": torch.tensor(x), "y": torch.tensor(y, dtype=torch.int32)}, str(path))
    data = load_data(str(path))
    assert data.x.shape == (12, 5) and data.num_classes == 4
    assert data.x_test is None and data.y_test is None
    assert torch.equal(data.y, torch.tensor(y))


def test_labels_of_shape_n_by_1_and_integral_floats_are_accepted() -> None:
    x, y = random_arrays(6)
    data = from_arrays(x, y.astype(np.float32).reshape(-1, 1))
    assert data.y.tolist() == y.tolist() and data.y.dtype == torch.int64


# --- image folders -------------------------------------------------------------------------


def write_image(path: Path, values: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode=mode).save(path)


def test_image_folder_gray(tmp_path: Path) -> None:
    dark = np.zeros((4, 5))  # height 4, width 5
    light = np.full((4, 5), 255)
    light[1, 2] = 51
    write_image(tmp_path / "imgs" / "zebra" / "a.png", dark, "L")
    write_image(tmp_path / "imgs" / "ant" / "b.png", light, "L")
    write_image(tmp_path / "imgs" / "ant" / "c.png", dark, "L")
    (tmp_path / "imgs" / "ant" / "notes.txt").write_text("not an image")
    data = load_data(str(tmp_path / "imgs"))
    assert data.x.shape == (3, 1, 4, 5)  # CHW
    assert data.y.tolist() == [0, 0, 1]  # sorted class names: ant = 0, zebra = 1
    assert float(data.x[0].max()) == 1.0 and float(data.x[0, 0, 1, 2]) == pytest.approx(0.2)
    assert float(data.x[1].max()) == 0.0 and float(data.x[2].max()) == 0.0


def test_image_folder_color_wins_over_gray(tmp_path: Path) -> None:
    color = np.zeros((3, 3, 3))
    color[..., 0] = 255  # red
    write_image(tmp_path / "a" / "red.png", color, "RGB")
    write_image(tmp_path / "b" / "gray.png", np.full((3, 3), 255), "L")
    data = load_image_folder(tmp_path)
    assert data.x.shape == (2, 3, 3, 3)
    assert data.x[0, 0].eq(1).all() and data.x[0, 1:].eq(0).all()
    assert data.x[1].eq(1).all()


def test_image_folder_train_and_test_splits(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("test", 1)):
        for cls in ("cat", "dog"):
            for i in range(count):
                write_image(tmp_path / split / cls / f"{i}.png", np.zeros((2, 2)), "L")
    data = load_data(str(tmp_path))
    assert data.x.shape == (6, 1, 2, 2) and data.x_test.shape == (2, 1, 2, 2)
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1] and data.y_test.tolist() == [0, 1]


def test_image_folder_sizes_must_match(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "1.png", np.zeros((4, 5)), "L")
    write_image(tmp_path / "b" / "2.png", np.zeros((6, 7)), "L")
    refused(str(tmp_path), "5x4", "7x6", "differ in size")


def test_image_folder_needs_class_subfolders(tmp_path: Path) -> None:
    write_image(tmp_path / "1.png", np.zeros((2, 2)), "L")
    refused(str(tmp_path), "no class subfolders")


def test_image_folder_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    refused(str(tmp_path), "broken.png")


# --- module:callable -----------------------------------------------------------------------

CALLABLE_SOURCES = {
    "tuple": "return torch.randn(10, 4), torch.arange(10) % 2",
    "four": "return np.ones((10, 4)), np.arange(10) % 2, np.ones((3, 4)), np.arange(3) % 2",
    "dict": "return {'x': np.ones((10, 4)), 'y': [0, 1] * 5}",
    "dataset": "return Dataset(torch.ones(10, 4), torch.arange(10) % 2)",
    "torch_dataset": "return TensorDataset(torch.ones(10, 4), torch.arange(10) % 2)",
    "loader": "return DataLoader(TensorDataset(torch.ones(10, 4), torch.arange(10) % 2), batch_size=3)",
}


@pytest.mark.parametrize("kind", list(CALLABLE_SOURCES))
def test_module_callable(kind: str, fresh_module_name) -> None:
    source = (
        "import numpy as np\nimport torch\nfrom torch.utils.data import DataLoader, TensorDataset\n"
        "from prunecli.data.labelled import Dataset\n\n"
        f"def make():\n    {CALLABLE_SOURCES[kind]}\n"
    )
    module = fresh_module_name("userdata", source)
    data = load_data(f"{module}:make")
    assert data.x.shape == (10, 4) and data.y.tolist() == [0, 1] * 5
    assert data.name == f"{module}:make"
    assert (data.x_test is not None) == (kind == "four")


def test_module_callable_errors(fresh_module_name) -> None:
    refused("no_such_module_xyz:make", "cannot import", "no_such_module_xyz")
    module = fresh_module_name(
        "baddata",
        "def boom():\n    raise ValueError('disk on fire')\n\n"
        "def wrong():\n    return 'text'\n\nvalue = 3\n",
    )
    refused(f"{module}:missing", "cannot import")
    refused(f"{module}:boom", "ValueError", "disk on fire")
    refused(f"{module}:wrong", "returned str")
    refused(f"{module}:value", "not callable")


# --- built-in sets -------------------------------------------------------------------------


def test_mnist1d_is_generated_locally_and_deterministic() -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    python_state, numpy_state = random.getstate(), np.random.get_state()
    data = load_data("mnist1d")
    assert random.getstate() == python_state  # make_dataset reseeds the globals: restored
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert data.x.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.num_classes == 10 and data.y.dtype == torch.int64
    reference = make_dataset(get_dataset_args())
    assert torch.equal(data.x, torch.tensor(reference["x"], dtype=torch.float32))
    assert torch.equal(data.y_test, torch.tensor(reference["y_test"]))
    again = load_data("mnist1d")
    assert again.x is not data.x and torch.equal(again.x, data.x)


def test_digits_fixed_split() -> None:
    from sklearn.datasets import load_digits

    data = load_data("digits")
    assert data.x.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.num_classes == 10
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
    reference = load_digits()
    both = torch.cat([data.x, data.x_test]).double()
    assert float(both.sum()) == pytest.approx(reference.data.sum() / 16)
    labels = Counter(torch.cat([data.y, data.y_test]).tolist())
    assert labels == Counter(reference.target.tolist())
    assert torch.equal(load_data("digits").y_test, data.y_test)


# --- bad input -----------------------------------------------------------------------------


def test_unknown_and_missing_sources(tmp_path: Path) -> None:
    refused(str(tmp_path / "missing.npz"), "does not exist")
    refused("cifar11", "'cifar11'", "not a file, a folder, module:callable or a built-in")
    (tmp_path / "data.csv").write_text("1,2\n")
    refused(str(tmp_path / "data.csv"), "cannot read .csv")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 broken")
    refused(str(tmp_path / "corrupt.npz"), "not a readable .npz")


def save_npz(tmp_path: Path, **arrays) -> str:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("arrays", "fragments"),
    [
        ({"y": np.zeros(4)}, ["no array 'x'", "found: y"]),
        ({"x": np.zeros((4, 2))}, ["no array 'y'"]),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, ["x has 4 samples but y has 3 labels"]),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 0.5, 1])}, ["integer class indices", "0.5"]),
        ({"x": np.zeros((3, 2)), "y": np.array([0, -1, 1])}, ["class indices", "-1"]),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0)}, ["empty"]),
        ({"x": np.zeros(3), "y": np.zeros(3)}, ["shape [3]", "batch dimension"]),
        ({"x": np.array([[np.nan, 1.0]]), "y": np.zeros(1)}, ["NaN"]),
        ({"x": np.zeros((2, 2)), "y": np.eye(2)}, ["shape [2, 2]", "class index per sample"]),
        ({"x": np.zeros((2, 2)), "y": np.zeros(2), "x_test": np.zeros((1, 2))}, ["no y_test"]),
        (
            {"x": np.zeros((2, 2)), "y": [0, 1], "x_test": np.zeros((1, 3)), "y_test": [0]},
            ["x_test samples have shape [3]", "x samples [2]"],
        ),
        ({"x": np.array(["a", "b"]), "y": np.zeros(2)}, ["numeric"]),
    ],
)
def test_bad_arrays(tmp_path: Path, arrays: dict, fragments: list[str]) -> None:
    refused(save_npz(tmp_path, **arrays), *fragments)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    spec = save_npz(tmp_path, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    refused(spec, "not a readable .npz")


def test_missing_optional_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    import prunecli.data.sources as data_module

    monkeypatch.setitem(__import__("sys").modules, "mnist1d", None)
    monkeypatch.setitem(__import__("sys").modules, "mnist1d.data", None)
    with pytest.raises(Unsupported, match="pip install"):
        data_module._mnist1d()


def test_batch_options() -> None:
    assert batch_options({}) == (1, 128)
    assert batch_options({"batches": 3, "batch_size": 7}) == (3, 7)
    for bad in ({"batches": 0}, {"batch_size": -2}, {"batch_size": 2.5}, {"batches": True}):
        with pytest.raises(BadInput, match="positive integer"):
            batch_options(bad)


# --- the batch stream ----------------------------------------------------------------------


def labelled(n: int = 50, classes: int = 5) -> Dataset:
    return from_arrays(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % classes)


def rows_of(batches) -> list[list[int]]:
    return [x[:, 0].long().tolist() for x, _ in batches]


def test_batches_are_deterministic_and_seeded() -> None:
    data = labelled()
    first = rows_of(data.batches(8, 4, seed=3))
    torch.manual_seed(1)
    np.random.seed(1)
    assert rows_of(data.batches(8, 4, seed=3)) == first  # global state plays no part
    assert rows_of(data.batches(8, 4, seed=4)) != first
    for x, y in data.batches(8, 4, seed=3):  # labels travel with their samples
        assert torch.equal(y, x[:, 0].long() % 5)


def test_batches_walk_through_epochs_without_repeats() -> None:
    data = labelled(50)
    batches = rows_of(data.batches(10, 12, seed=0))
    assert all(len(set(rows)) == 10 for rows in batches)
    assert sorted(sum(batches[:5], [])) == list(range(50))  # epoch 1: every sample once
    assert sorted(sum(batches[5:10], [])) == list(range(50))  # epoch 2
    assert rows_of(data.batches(10, 3, seed=0, start=4)) == batches[4:7]


def test_batch_size_is_capped_at_the_data_size() -> None:
    data = labelled(6)
    (rows,) = rows_of(data.batches(128, 1))
    assert sorted(rows) == list(range(6))


def test_balanced_batches() -> None:
    data = labelled(50, classes=5)
    for x, y in data.batches(20, 6, seed=1, balanced=True):
        assert Counter(y.tolist()) == dict.fromkeys(range(5), 4)
        assert len(set(x[:, 0].tolist())) == 20
    counts = [Counter(y.tolist()) for _, y in data.batches(12, 5, balanced=True)]
    assert all(sorted(c.values()) == [2, 2, 2, 3, 3] for c in counts)  # 12 = 5 × 2 + 2
    first = rows_of(data.batches(20, 4, seed=1, balanced=True))
    assert rows_of(data.batches(20, 2, seed=1, balanced=True, start=2)) == first[2:]


def test_balanced_batches_with_a_small_class() -> None:
    y = torch.tensor([0] * 2 + [1] * 20 + [2] * 20)
    data = from_arrays(torch.arange(42, dtype=torch.float32)[:, None], y)
    for _, labels in data.batches(30, 3, balanced=True):
        assert Counter(labels.tolist()) == {0: 2, 1: 14, 2: 14}


# --- data against a model ------------------------------------------------------------------


def classifier(inputs: int = 4, outputs: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, outputs))


def test_check_fits_returns_outputs_and_leaves_the_model_alone() -> None:
    model = classifier().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    data = from_arrays(torch.randn(10, 4), torch.arange(10) % 3, name="toy")
    assert check_fits(data, model, (4,)) == 3
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # eval mode: running stats untouched


def test_check_fits_labels_out_of_range() -> None:
    data = from_arrays(torch.randn(10, 4), torch.arange(10), name="toy")
    with pytest.raises(BadInput) as caught:
        check_fits(data, classifier(outputs=3), (4,))
    assert "10 classes" in caught.value.message and "3 outputs" in caught.value.message
    assert check_fits(data, classifier(outputs=3), check_labels=False) == 3


def test_check_fits_shape_mismatch() -> None:
    data = from_arrays(torch.randn(10, 7), torch.arange(10) % 3, name="toy")
    with pytest.raises(BadInput) as caught:
        check_fits(data, classifier(inputs=4), (4,))
    message = caught.value.message
    assert "[7]" in message and "expects [4]" in message and "\n" not in message


def test_check_fits_needs_class_scores() -> None:
    data = from_arrays(torch.randn(10, 4), torch.arange(10) % 3)
    with pytest.raises(Unsupported, match="class scores"):
        check_fits(data, nn.Flatten(0))
