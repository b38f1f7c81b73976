"""Topology (DESIGN §4): effective paths, weights, nodes and collapsed layers.

Every number is checked against an independent route: paths enumerated one by one over an
explicit graph, a hand-worked example, or exact Python integers propagated over the masks.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from conftest import SMALL_MLP, report_of, write_weights
from safetensors.torch import load_file, save_file
from torch import nn

from prunecli.models.loaded import load_model
from prunecli.models.zoo import build_arch
from prunecli.topology.linearise import adaptive_sum_pool
from prunecli.topology.metrics import compute_topology, model_topology

# --- helpers: masked networks and an explicit graph to enumerate ---------------------------------


def masked_mlp(widths: Sequence[int], density: float, seed: int) -> tuple[nn.Module, list[str]]:
    """A zoo MLP whose weights are random 0/1 masks of the given density (biases left random)."""
    torch.manual_seed(seed)
    module = build_arch("mlp", {"widths": list(widths)}).module
    names = [f"fc{i}.weight" for i in range(1, len(widths))]
    with torch.no_grad():
        for name in names:
            weight = module.get_parameter(name)
            weight.copy_((torch.rand_like(weight) < density).float() * weight.sign())
    return module, names


def masks_of(module: nn.Module, names: Sequence[str]) -> list[torch.Tensor]:
    return [(module.get_parameter(name) != 0).int() for name in names]


class Graph:
    """Nodes and weighted-by-identity edges built from the layer definitions, not from torch."""

    def __init__(self) -> None:
        self.edges: dict[tuple, list[tuple[tuple, tuple | None]]] = {}

    def add(self, source: tuple, target: tuple, weight: tuple | None = None) -> None:
        self.edges.setdefault(source, []).append((target, weight))

    def paths(self, sources: Sequence[tuple], is_output) -> Iterator[list[tuple]]:
        """Every input→output path, as the list of (node, weight-id) steps it takes."""

        def walk(node: tuple, steps: list[tuple]) -> Iterator[list[tuple]]:
            if is_output(node):
                yield steps
            for target, weight in self.edges.get(node, []):
                yield from walk(target, [*steps, (target, weight)])

        for source in sources:
            yield from walk(source, [])


def summary(paths: list[list[tuple]]) -> tuple[int, dict[str, set], dict[str, set]]:
    """Path count; per layer, the weights and the output channels some path runs through."""
    weights: dict[str, set] = {}
    channels: dict[str, set] = {}
    for path in paths:
        for node, weight in path:
            if weight is not None:
                layer = weight[0]
                weights.setdefault(layer, set()).add(weight)
                channels.setdefault(layer, set()).add(node[1])
    return len(paths), weights, channels


def conv_edges(graph: Graph, layer: str, conv: nn.Conv2d, src: str, dst: str, shape_in):
    """Edges of a masked Conv2d from its definition: out[o, y, x] takes W[o, i, ky, kx] ·
    in[i, y·s + ky − p, x·s + kx − p] when that cell is inside the input."""
    mask = conv.weight != 0
    channels_in, height, width = shape_in
    (k_h, k_w), (s_h, s_w), (p_h, p_w) = conv.kernel_size, conv.stride, conv.padding
    out_h, out_w = (height + 2 * p_h - k_h) // s_h + 1, (width + 2 * p_w - k_w) // s_w + 1
    for o, i, ky, kx, y, x in itertools.product(
        range(conv.out_channels),
        range(channels_in),
        range(k_h),
        range(k_w),
        range(out_h),
        range(out_w),
    ):
        row, col = y * s_h + ky - p_h, x * s_w + kx - p_w
        if 0 <= row < height and 0 <= col < width and mask[o, i, ky, kx]:
            graph.add((src, i, row, col), (dst, o, y, x), (layer, o, i, ky, kx))
    return conv.out_channels, out_h, out_w


# --- masked MLPs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mlp_paths_weights_and_nodes_equal_brute_force_enumeration(seed: int) -> None:
    widths = [4, 5, 3, 2]
    module, names = masked_mlp(widths, density=0.5, seed=seed)
    masks = masks_of(module, names)
    # every tuple of one neuron per layer is a candidate path; it is a path when every edge is kept
    live = [
        nodes
        for nodes in itertools.product(*(range(w) for w in widths))
        if all(masks[k][nodes[k + 1], nodes[k]] for k in range(len(masks)))
    ]
    topology = compute_topology(module, names, (widths[0],))
    expected = math.log10(len(live)) if live else -math.inf
    assert topology.log10_paths == pytest.approx(expected, abs=1e-12)
    for k, layer in enumerate(topology.layers):
        used_weights = {(nodes[k + 1], nodes[k]) for nodes in live}
        used_nodes = {nodes[k + 1] for nodes in live}
        assert layer.name == names[k]
        assert layer.weights == widths[k] * widths[k + 1]
        assert layer.effective_weights == len(used_weights)
        assert layer.nodes == widths[k + 1]
        assert layer.effective_nodes == len(used_nodes)
    effective = sum(len({(n[k + 1], n[k]) for n in live}) for k in range(len(masks)))
    assert topology.effective_sparsity == pytest.approx(1 - effective / topology.weights)


def test_hand_worked_example() -> None:
    r"""Two inputs, three hidden neurons, two outputs; kept weights drawn as edges:

        x0 ──► h0 ──► y0          fc1 keeps h0←x0, h0←x1, h1←x1 (3 of 6)
        x1 ──┘  ▲      ▲          fc2 keeps y0←h0, y0←h2        (2 of 6)
        x1 ──► h1 (dead end: no edge out)
                h2 ──┘ (no edge in)

    Paths: x0→h0→y0 and x1→h0→y0, so 2. Effective weights: fc1 h0←x0, h0←x1 (h1←x1 leads
    nowhere), fc2 y0←h0 (y0←h2 is never reached): 3 of 12, effective sparsity 9/12. Effective
    nodes: h0 only of h0..h2 (h1 has no way out, h2 no way in), y0 only of y0, y1. No layer
    collapsed: both still carry paths.
    """
    module = nn.Sequential(OrderedDict(fc1=nn.Linear(2, 3), relu=nn.ReLU(), fc2=nn.Linear(3, 2)))
    with torch.no_grad():
        module.fc1.weight.copy_(torch.tensor([[0.3, -0.2], [0.0, 0.7], [0.0, 0.0]]))
        module.fc2.weight.copy_(torch.tensor([[-1.5, 0.0, 2.0], [0.0, 0.0, 0.0]]))
    topology = compute_topology(module, ["fc1.weight", "fc2.weight"], (2,))
    assert topology.log10_paths == pytest.approx(math.log10(2))
    fc1, fc2 = topology.layers
    assert (fc1.effective_weights, fc1.effective_nodes, fc1.nodes) == (2, 1, 3)
    assert (fc2.effective_weights, fc2.effective_nodes, fc2.nodes) == (1, 1, 2)
    assert topology.effective_sparsity == pytest.approx(9 / 12)
    assert topology.collapsed_layers == []


def test_one_fully_pruned_layer_is_one_collapsed_layer_and_zero_paths() -> None:
    module, names = masked_mlp([6, 8, 8, 8, 4], density=0.6, seed=3)
    with torch.no_grad():
        module.fc2.weight.zero_()
    topology = compute_topology(module, names, (6,))
    assert topology.log10_paths == -math.inf
    assert topology.collapsed_layers == ["fc2.weight"]
    assert [layer.effective_weights for layer in topology.layers] == [0, 0, 0, 0]
    assert [layer.effective_nodes for layer in topology.layers] == [0, 0, 0, 0]
    assert topology.effective_sparsity == 1.0


def test_every_fully_pruned_layer_counts_as_collapsed_but_not_the_cut_off_ones() -> None:
    module, names = masked_mlp([6, 8, 8, 8, 8, 4], density=1.0, seed=0)
    with torch.no_grad():
        module.fc2.weight.zero_()
        module.fc4.weight.zero_()
    topology = compute_topology(module, names, (6,))
    # fc1, fc3 and fc5 keep every weight; they carry no path, but the collapse is elsewhere
    assert topology.collapsed_layers == ["fc2.weight", "fc4.weight"]
    assert topology.effective_weights == 0


def test_layers_that_keep_weights_but_do_not_connect_are_collapsed() -> None:
    r"""fc1 feeds only h0, fc2 reads only h1: both keep weights, no path crosses them.

    x ──► h0    h1 ──► y        (h0 has no way out, h1 no way in)
    """
    module = nn.Sequential(OrderedDict(fc1=nn.Linear(3, 2), fc2=nn.Linear(2, 2)))
    with torch.no_grad():
        module.fc1.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        module.fc2.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    topology = compute_topology(module, ["fc1.weight", "fc2.weight"], (3,))
    assert topology.log10_paths == -math.inf
    assert topology.collapsed_layers == ["fc1.weight", "fc2.weight"]
    assert [layer.effective_nodes for layer in topology.layers] == [0, 0]


def test_activations_count_as_plain_edges() -> None:
    """A zero count stays zero through any activation (sigmoid(0) would be 0.5)."""
    module = nn.Sequential(
        OrderedDict(fc1=nn.Linear(3, 4), act=nn.Sigmoid(), fc2=nn.Linear(4, 2), out=nn.Softmax(-1))
    )
    with torch.no_grad():
        module.fc1.weight.zero_()
        module.fc2.weight.fill_(1.0)
    topology = compute_topology(module, ["fc1.weight", "fc2.weight"], (3,))
    assert topology.log10_paths == -math.inf
    assert topology.collapsed_layers == ["fc1.weight"]
    module.fc1.weight.data.fill_(1.0)
    assert compute_topology(module, ["fc1.weight", "fc2.weight"], (3,)).log10_paths == (
        pytest.approx(math.log10(3 * 4 * 2))
    )


# --- a conv net against an explicit graph --------------------------------------------------------


def tiny_convnet(pool: type[nn.Module], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    module = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 3, 2, padding=1, bias=False),  # 1×4×4 → 3×5×5
            bn1=nn.BatchNorm2d(3),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(3, 2, 2, stride=1),  # → 2×4×4
            relu2=nn.ReLU(),
            pool=pool(2),  # → 2×2×2
            flatten=nn.Flatten(),
            fc=nn.Linear(8, 2),
        )
    ).eval()
    with torch.no_grad():
        for layer in (module.conv1, module.conv2, module.fc):
            layer.weight.mul_((torch.rand_like(layer.weight) < 0.45).float())
    return module


def convnet_graph(module: nn.Sequential) -> tuple[Graph, list[tuple]]:
    graph = Graph()
    shape = conv_edges(graph, "conv1.weight", module.conv1, "x", "conv1", (1, 4, 4))
    shape = conv_edges(graph, "conv2.weight", module.conv2, "conv1", "conv2", shape)
    channels, height, width = shape
    # pooling, max or average: every cell of a 2×2 window is an edge to its pooled cell
    for c, y, x in itertools.product(range(channels), range(height), range(width)):
        if y // 2 < height // 2 and x // 2 < width // 2:
            graph.add(("conv2", c, y, x), ("pool", c, y // 2, x // 2))
    fc_mask = module.fc.weight != 0
    for c, y, x in itertools.product(range(channels), range(height // 2), range(width // 2)):
        flat = (c * (height // 2) + y) * (width // 2) + x
        for o in range(module.fc.out_features):
            if fc_mask[o, flat]:
                graph.add(("pool", c, y, x), ("fc", o), ("fc.weight", o, flat))
    sources = [("x", 0, y, x) for y in range(4) for x in range(4)]
    return graph, sources


@pytest.mark.parametrize("pool", [nn.MaxPool2d, nn.AvgPool2d])
@pytest.mark.parametrize("seed", [0, 1])
def test_conv_net_equals_enumeration_over_channels_and_kernel_positions(pool, seed) -> None:
    module = tiny_convnet(pool, seed)
    names = ["conv1.weight", "conv2.weight", "fc.weight"]
    graph, sources = convnet_graph(module)
    paths = list(graph.paths(sources, lambda node: node[0] == "fc"))
    count, weights, channels = summary(paths)
    assert count > 0  # the seeds are chosen so that some paths survive
    topology = compute_topology(module, names, (1, 4, 4))
    assert topology.log10_paths == pytest.approx(math.log10(count), abs=1e-12)
    for layer in topology.layers:
        assert layer.effective_weights == len(weights.get(layer.name, ())), layer.name
        assert layer.effective_nodes == len(channels.get(layer.name, ())), layer.name
    assert [layer.nodes for layer in topology.layers] == [3, 2, 2]
    # the same network as a torch.export program: same numbers from its flat graph
    program = torch.export.export(module, (torch.ones(1, 1, 4, 4),))
    flat = compute_topology(program.module(), names, (1, 4, 4))
    assert flat.log10_paths == pytest.approx(math.log10(count), abs=1e-12)
    assert [layer.effective_weights for layer in flat.layers] == [
        len(weights.get(name, ())) for name in names
    ]
    assert [layer.effective_nodes for layer in flat.layers] == [
        len(channels.get(name, ())) for name in names
    ]


def test_adaptive_sum_pool_sums_each_uneven_window() -> None:
    x = torch.arange(2 * 5 * 7, dtype=torch.float64).reshape(1, 2, 5, 7)
    pooled = adaptive_sum_pool(x, (3, 4))
    for c, i, j in itertools.product(range(2), range(3), range(4)):
        rows = range((i * 5) // 3, -((-(i + 1) * 5) // 3))  # PyTorch's adaptive windows
        cols = range((j * 7) // 4, -((-(j + 1) * 7) // 4))
        assert pooled[0, c, i, j] == sum(x[0, c, r, q] for r in rows for q in cols)


# --- deep networks: exact integers over the masks ------------------------------------------------


def integer_chain(masks: Sequence[torch.Tensor], residual: bool = False):
    """Path counts with Python integers: a_l = M_l a_{l-1} (+ a_{l-1} with a skip), b backwards.
    Returns the total and, per layer, the number of kept weights with a_{l-1}[j]·b_l[i] > 0."""
    rows = [[[j for j, kept in enumerate(row) if kept] for row in m.tolist()] for m in masks]
    forward = [[1] * masks[0].shape[1]]
    for kept in rows:
        a = [sum(forward[-1][j] for j in row) for row in kept]
        forward.append([x + y for x, y in zip(a, forward[-1], strict=True)] if residual else a)
    backward = [[1] * masks[-1].shape[0]]  # b at the output of the last layer
    for m, kept in zip(reversed(masks), reversed(rows), strict=True):
        b = backward[0]
        through = [0] * m.shape[1]
        for i, row in enumerate(kept):
            for j in row:
                through[j] += b[i]
        backward.insert(
            0, [x + y for x, y in zip(through, b, strict=True)] if residual else through
        )
    total = sum(forward[-1])
    effective = [
        sum(1 for i, row in enumerate(kept) for j in row if forward[k][j] and backward[k + 1][i])
        for k, kept in enumerate(rows)
    ]
    return total, effective


@pytest.mark.parametrize(
    ("depth", "density", "note"),
    [
        (200, 0.12, "high sparsity: float64 holds the count"),
        (200, 0.9, "about 10^352 paths: past float64"),
        (400, 0.95, "about 10^708 paths: past 2^2024, needs the per-layer scales"),
    ],
)
def test_deep_mlp_paths_equal_exact_integers(depth: int, density: float, note: str) -> None:
    module, names = masked_mlp([64] * (depth + 1), density, seed=depth)
    total, effective = integer_chain(masks_of(module, names))
    topology = compute_topology(module, names, (64,))
    assert total > 0
    assert topology.log10_paths == pytest.approx(math.log10(total), abs=1e-9), note
    assert [layer.effective_weights for layer in topology.layers] == effective
    # one layer reported (--include): the others are still the graph, and still in range
    (middle,) = compute_topology(module, [names[depth // 2]], (64,)).layers
    assert middle.effective_weights == effective[depth // 2]


class ResidualMLP(nn.Module):
    """x → x + fc_k(x), k = 1..depth: every block doubles the kinds of paths."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


@pytest.mark.parametrize(("depth", "countable"), [(200, True), (400, False)])
def test_deep_residual_mlp_equals_exact_integers(depth: int, countable: bool) -> None:
    torch.manual_seed(depth)
    module = ResidualMLP(48, depth)
    names = [f"blocks.{k}.weight" for k in range(depth)]
    with torch.no_grad():
        for k, block in enumerate(module.blocks):
            density = 0.0 if k == 7 else 0.9  # one block fully pruned: the shortcut still carries
            block.weight.copy_((torch.rand_like(block.weight) < density).float())
    total, effective = integer_chain(masks_of(module, names), residual=True)
    topology = compute_topology(module, names, (48,))
    if countable:  # ~10^330: past float64, within the 2^-1000 input's range
        assert topology.log10_paths == pytest.approx(math.log10(total), abs=1e-9)
    else:  # ~10^660 with skip connections: too many to count, and said so
        assert topology.log10_paths is None
    assert [layer.effective_weights for layer in topology.layers] == effective
    assert topology.collapsed_layers == ["blocks.7.weight"]


# --- library entry point -------------------------------------------------------------------------


def test_no_topology_without_a_graph(tmp_path: Path) -> None:
    path = write_weights(tmp_path / "w.safetensors", {"fc.weight": torch.ones(3, 4)})
    assert model_topology(load_model(str(path)), ["fc.weight"]) is None


# --- the CLI -------------------------------------------------------------------------------------


def mlp_paths(path: Path) -> tuple[int, list[int]]:
    tensors = load_file(str(path))
    masks = [(tensors[f"fc{i}.weight"] != 0).int() for i in (1, 2, 3)]
    return integer_chain(masks)


@pytest.fixture
def pruned_mlp(cli, mlp_file: Path) -> Path:
    out = mlp_file.with_name("p80.safetensors")
    result = cli("prune", mlp_file, "--method", "magnitude", "--sparsity", "0.8", "-o", out, "-q")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture
def collapsed_mlp(mlp_file: Path) -> Path:
    tensors = load_file(str(mlp_file))
    tensors["fc2.weight"] = torch.zeros_like(tensors["fc2.weight"])
    out = mlp_file.with_name("collapsed.safetensors")
    metadata = {"prunecli.arch": "mlp", "prunecli.arch_kwargs": json.dumps(SMALL_MLP)}
    save_file(tensors, str(out), metadata=metadata)
    return out


def test_inspect_shows_topology(cli, pruned_mlp: Path) -> None:
    total, _ = mlp_paths(pruned_mlp)
    result = cli("inspect", pruned_mlp)
    assert result.exit_code == 0, result.stderr
    assert "eff." in result.stdout and "nodes" in result.stdout
    shown = f"{total:,}" if total < 10**6 else f"10^{math.log10(total):.1f}"
    assert f"effective paths {shown}, effective sparsity" in result.stdout
    assert "collapsed layers: none" in result.stdout


def test_inspect_json_topology(cli, pruned_mlp: Path) -> None:
    total, effective = mlp_paths(pruned_mlp)
    report = report_of(cli("inspect", pruned_mlp, "--json"))
    topology = report["topology"]
    assert topology["log10_effective_paths"] == pytest.approx(math.log10(total))
    assert topology["effective_weights"] == sum(effective)
    assert topology["prunable_weights"] == 352
    assert topology["effective_sparsity"] == pytest.approx(1 - sum(effective) / 352)
    assert topology["collapsed_layers"] == []
    assert [layer["effective_weights"] for layer in report["layers"]] == effective
    assert [layer["nodes"] for layer in report["layers"]] == SMALL_MLP["widths"][1:]
    for layer in report["layers"]:
        assert 0 < layer["effective_nodes"] <= layer["nodes"]
        assert layer["collapsed"] is False


def test_prune_report_has_topology(cli, mlp_file: Path) -> None:
    out = mlp_file.with_name("p50.safetensors")
    result = cli("prune", mlp_file, "-m", "magnitude", "--sparsity", "0.5", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    total, effective = mlp_paths(out)
    topology = report_of(result)["topology"]
    assert topology["log10_effective_paths"] == pytest.approx(math.log10(total))
    assert topology["effective_weights"] == sum(effective)


def test_collapsed_model_reports_zero_paths(cli, collapsed_mlp: Path) -> None:
    report = report_of(cli("inspect", collapsed_mlp, "--json"))
    assert report["topology"]["log10_effective_paths"] is None  # no path left
    assert report["topology"]["collapsed_layers"] == ["fc2.weight"]
    assert report["topology"]["effective_sparsity"] == 1.0
    assert [layer["collapsed"] for layer in report["layers"]] == [False, True, False]
    human = cli("inspect", collapsed_mlp)
    assert "effective paths 0" in human.stdout
    assert "collapsed layers: 1 (fc2.weight)" in human.stdout


def test_max_collapsed_gate(cli, pruned_mlp: Path, collapsed_mlp: Path) -> None:
    result = cli("inspect", collapsed_mlp, "--max-collapsed", "0")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "1 collapsed layer (fc2.weight)" in line and "--max-collapsed 0" in line
    assert cli("inspect", collapsed_mlp, "--max-collapsed", "1", "-q").exit_code == 0
    result = cli("inspect", pruned_mlp, "--max-collapsed", "0", "--json")
    assert result.exit_code == 0, result.stderr
    (check,) = report_of(result)["checks"]
    assert check["name"] == "max-collapsed" and check["passed"] is True and check["value"] == 0


def test_max_collapsed_needs_the_graph(cli, workdir: Path) -> None:
    module, _ = masked_mlp([12, 16, 8, 4], density=0.5, seed=0)
    tensors = {k: v.detach().clone() for k, v in module.state_dict().items()}
    weights_only = write_weights(workdir / "w.safetensors", tensors)
    result = cli("inspect", weights_only, "--max-collapsed", "0")
    assert result.exit_code == 3
    assert "--arch" in result.stderr and "Traceback" not in result.stderr
    report = report_of(cli("inspect", weights_only, "--json"))  # no gate: no topology, no error
    assert report["topology"] is None
    assert "effective_weights" not in report["layers"][0]
    given = cli("inspect", weights_only, "--arch", "mlp", "--arch-kwargs", json.dumps(SMALL_MLP))
    assert given.exit_code == 0 and "effective paths" in given.stdout
    assert cli("inspect", weights_only, "--max-collapsed", "-1").exit_code == 2


def test_inspect_all_leaves_biases_out_of_topology(cli, pruned_mlp: Path) -> None:
    report = report_of(cli("inspect", pruned_mlp, "--all", "--json"))
    by_name = {layer["name"]: layer for layer in report["layers"]}
    assert by_name["fc1.bias"]["effective_weights"] is None
    assert by_name["fc1.weight"]["effective_weights"] > 0
    assert report["topology"]["prunable_weights"] == 352


def test_markdown_report_has_topology(cli, collapsed_mlp: Path, workdir: Path) -> None:
    result = cli("inspect", collapsed_mlp, "--report", workdir / "r.md", "-q")
    assert result.exit_code == 0, result.stderr
    text = (workdir / "r.md").read_text()
    assert "| eff. sparsity | nodes |" in text
    assert "**collapsed**" in text
    assert "collapsed layers: 1 (fc2.weight)" in text


def test_pt2_program_topology_equals_enumeration(cli, workdir: Path) -> None:
    module = tiny_convnet(nn.MaxPool2d, seed=0)
    graph, sources = convnet_graph(module)
    count, weights, channels = summary(list(graph.paths(sources, lambda n: n[0] == "fc")))
    path = workdir / "tiny.pt2"
    torch.export.save(torch.export.export(module, (torch.ones(1, 1, 4, 4),)), str(path))
    report = report_of(cli("inspect", path, "--json"))
    assert report["topology"]["log10_effective_paths"] == pytest.approx(math.log10(count))
    for layer in report["layers"]:
        assert layer["effective_weights"] == len(weights.get(layer["name"], ()))
        assert layer["effective_nodes"] == len(channels.get(layer["name"], ()))


USER_ARCH = """
import torch

def make():
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))

def tokens():
    return torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2))
"""


def test_user_architecture_needs_an_input_shape(cli, workdir: Path, fresh_module_name) -> None:
    spec = f"{fresh_module_name('userarch', USER_ARCH)}:make"
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        net[0].weight[:, 1:].zero_()  # only input 0 feeds the hidden layer
    source = write_weights(workdir / "user.safetensors", dict(net.state_dict()))
    report = report_of(cli("inspect", source, "--arch", spec, "--json"))
    assert report["topology"] is None and report["warnings"] == []
    result = cli("inspect", source, "--arch", spec, "--max-collapsed", "0")
    assert result.exit_code == 3 and "--input-shape" in result.stderr
    report = report_of(cli("inspect", source, "--arch", spec, "--input-shape", "4", "--json"))
    assert report["topology"]["log10_effective_paths"] == pytest.approx(math.log10(6 * 2))
    assert [layer["effective_weights"] for layer in report["layers"]] == [6, 12]


def test_a_model_that_refuses_ones_still_gets_its_report(
    cli, workdir: Path, fresh_module_name
) -> None:
    spec = f"{fresh_module_name('userarch', USER_ARCH)}:tokens"
    net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    source = write_weights(workdir / "tok.safetensors", dict(net.state_dict()))
    result = cli("inspect", source, "--arch", spec, "--input-shape", "3", "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["topology"] is None
    assert any(w.startswith("topology not computed") for w in report["warnings"])
    result = cli("inspect", source, "--arch", spec, "--input-shape", "3", "--max-collapsed", "0")
    assert result.exit_code == 3 and "topology not computed" not in result.stderr
    assert "--max-collapsed needs the model's topology" in result.stderr


def test_layers_left_out_of_the_report_still_count_by_their_masks() -> None:
    module, names = masked_mlp([5, 7, 6, 3], density=0.5, seed=4)
    with torch.no_grad():  # fc3 is not reported: its kept weights, negative ones too, are edges
        module.fc3.weight.copy_(-module.fc3.weight.abs() * (torch.rand(3, 6) < 0.6))
    total, effective = integer_chain(masks_of(module, names))
    topology = compute_topology(module, names[:2], (5,))
    assert topology.log10_paths == pytest.approx(math.log10(total), abs=1e-12)
    assert [layer.effective_weights for layer in topology.layers] == effective[:2]
