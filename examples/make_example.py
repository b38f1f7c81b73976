"""Train the bundled example: an MLP (64-128-64-10) on scikit-learn's digits, saved by prunecli.

    python examples/make_example.py            # writes examples/mlp-digits.safetensors

Offline and deterministic: the digits ship with scikit-learn, the seed is fixed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from prunecli.jobs.writing import write_model
from prunecli.models.loaded import Architecture, LoadedModel, build_module

WIDTHS = [64, 128, 64, 10]
OUTPUT = Path(__file__).with_name("mlp-digits.safetensors")


def main() -> None:
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.25, random_state=0)
    x_train, x_test = (torch.tensor(a, dtype=torch.float32) for a in (x_train, x_test))
    y_train, y_test = (torch.tensor(a) for a in (y_train, y_test))

    arch = Architecture("mlp", {"widths": WIDTHS})
    module = build_module(arch)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    for _epoch in range(60):
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            loss = torch.nn.functional.cross_entropy(module(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    module.eval()
    with torch.no_grad():
        accuracy = (module(x_test).argmax(1) == y_test).float().mean().item()
    tensors = {name: t.detach().clone() for name, t in module.state_dict().items()}
    model = LoadedModel(tensors, {}, "examples/make_example.py", "safetensors", None, module, arch)
    extra = {
        "example.dataset": "sklearn digits (8x8), 25% test split, random_state 0",
        "example.test_accuracy": f"{accuracy:.4f}",
    }
    if OUTPUT.exists():
        OUTPUT.unlink()
    write_model(model, str(OUTPUT), extra)
    print(f"wrote {OUTPUT} (test accuracy {accuracy:.2%})")


if __name__ == "__main__":
    # --help and unknown arguments stop here, before the example is retrained and replaced
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    main()
