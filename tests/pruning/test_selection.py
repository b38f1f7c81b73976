"""Which tensors are prunable (DESIGN §2): defaults in module and weights-only mode, patterns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunecli.errors import BadInput, Unsupported
from prunecli.models.loaded import LoadedModel
from prunecli.pruning.prunable import check_finite, matches, select_prunable


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv1d = nn.Conv1d(4, 4, 1)
        self.deconv = nn.ConvTranspose2d(4, 2, 2)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)
        self.bilinear = nn.Bilinear(3, 3, 2)  # a 3-D weight, but not a Linear/Conv layer
        self.scale = nn.Parameter(torch.ones(3, 3))  # 2-D, not a layer weight


def with_module() -> LoadedModel:
    module = Mixed()
    tensors = dict(module.state_dict())
    return LoadedModel(tensors, {}, "mem", "safetensors", None, module=module)


def weights_only(tensors: dict[str, torch.Tensor]) -> LoadedModel:
    return LoadedModel(tensors, {}, "file.safetensors", "safetensors", None)


TRANSFORMER_LIKE = {
    "model.embed_tokens.weight": torch.ones(10, 4),
    "transformer.wte.weight": torch.ones(10, 4),
    "transformer.wpe.weight": torch.ones(10, 4),
    "layers.0.input_layernorm.weight": torch.ones(4, 4),  # 2-D on purpose: excluded by name
    "layers.0.attn.q_proj.weight": torch.ones(4, 4),
    "layers.0.attn.q_proj.bias": torch.ones(4),
    "layers.0.mlp.fc.weight": torch.ones(8, 4, dtype=torch.float16),
    "ln_f.weight": torch.ones(4, 4),
    "bn1.weight": torch.ones(4, 4),
    "conv1.weight": torch.ones(4, 3, 3, 3),
    "token_ids.weight": torch.ones(4, 4, dtype=torch.int64),  # not floating
    "rope.inv_freq": torch.ones(4, 4),  # does not end in weight
    "lm_head.weight": torch.ones(10, 4),
    "bnorm_like.lnx.weight": torch.ones(4, 4),  # "lnx" is not a norm prefix, "bnorm" is a norm
    "lnx.weight": torch.ones(4, 4),
    "scalar.weight": torch.ones(()),
    "vector.weight": torch.ones(4),
}


def test_module_mode_default_is_linear_and_conv_weights_in_file_order() -> None:
    model = with_module()
    assert select_prunable(model) == [
        "conv.weight",
        "conv1d.weight",
        "deconv.weight",
        "head.weight",
    ]


def test_module_mode_top_level_linear() -> None:
    module = nn.Linear(3, 2)
    model = LoadedModel(dict(module.state_dict()), {}, "mem", "safetensors", None, module=module)
    assert select_prunable(model) == ["weight"]


def test_weights_only_default_excludes_embeddings_norms_and_non_weights() -> None:
    model = weights_only(dict(TRANSFORMER_LIKE))
    assert select_prunable(model) == [
        "layers.0.attn.q_proj.weight",
        "layers.0.mlp.fc.weight",
        "conv1.weight",
        "lm_head.weight",
        "lnx.weight",
    ]


def test_include_globs_and_regex() -> None:
    model = weights_only(dict(TRANSFORMER_LIKE))
    got = select_prunable(model, include=["lm_head.*", "layers.*.weight"])
    # file order, and an include may bring back what the default leaves out (a 2-D norm)
    assert got == [
        "layers.0.input_layernorm.weight",
        "layers.0.attn.q_proj.weight",
        "layers.0.mlp.fc.weight",
        "lm_head.weight",
    ]
    assert select_prunable(model, include=["re:transformer\\.w[tp]e"]) == [
        "transformer.wte.weight",
        "transformer.wpe.weight",
    ]
    # re: uses re.match: anchored at the start only
    assert select_prunable(model, include=["re:conv"]) == ["conv1.weight"]
    assert select_prunable(model, include=["re:.*conv"]) == ["conv1.weight"]
    with pytest.raises(BadInput):
        select_prunable(model, include=["re:1\\.weight$"])  # does not match at the start


def test_exclude_globs_and_regex() -> None:
    model = weights_only(dict(TRANSFORMER_LIKE))
    got = select_prunable(model, exclude=["lm_head.weight", "re:layers\\.\\d+\\.attn"])
    assert got == ["layers.0.mlp.fc.weight", "conv1.weight", "lnx.weight"]
    # an exclude that matches nothing is fine
    assert select_prunable(model, exclude=["nothing*"]) == select_prunable(model)
    model = with_module()
    assert select_prunable(model, exclude=["*conv*"]) == ["head.weight"]


def test_include_then_exclude() -> None:
    model = with_module()
    got = select_prunable(model, include=["*.weight"], exclude=["embed.*"])
    # include works on floating 2+-D tensors, not on layer types
    assert got == [
        "conv.weight",
        "conv1d.weight",
        "deconv.weight",
        "head.weight",
        "bilinear.weight",
    ]


def test_include_matching_nothing_is_bad_input() -> None:
    model = weights_only(dict(TRANSFORMER_LIKE))
    with pytest.raises(BadInput, match="--include 'decoder.\\*' matches no prunable tensor"):
        select_prunable(model, include=["lm_head.*", "decoder.*"])


def test_include_matching_only_non_prunable_is_bad_input() -> None:
    model = weights_only(dict(TRANSFORMER_LIKE))
    for pattern in ["*.bias", "token_ids.weight", "scalar.weight", "vector.weight"]:
        with pytest.raises(BadInput, match="matches no prunable tensor"):
            select_prunable(model, include=[pattern])


def test_bad_regex_is_bad_input() -> None:
    model = weights_only(dict(TRANSFORMER_LIKE))
    with pytest.raises(BadInput, match="bad regular expression"):
        select_prunable(model, include=["re:("])
    with pytest.raises(BadInput, match="bad regular expression"):
        select_prunable(model, exclude=["re:[a-"])


def test_excluding_everything_is_unsupported() -> None:
    model = with_module()
    with pytest.raises(Unsupported, match="no prunable tensor"):
        select_prunable(model, exclude=["*"])
    with pytest.raises(Unsupported):
        select_prunable(weights_only({"bias": torch.ones(3), "embedding.weight": torch.ones(3, 3)}))


def test_matches_is_case_sensitive_glob() -> None:
    assert matches("Layer.Weight", "Layer.*")
    assert not matches("Layer.Weight", "layer.*")
    assert matches("a.b.c", "a*c")  # fnmatch's * crosses dots
    assert matches("a[1].w", "a[[]1].w")


def test_check_finite_names_the_tensor() -> None:
    model = weights_only(
        {"a.weight": torch.ones(2, 2), "b.weight": torch.tensor([[1.0, float("nan")]])}
    )
    check_finite(model, ["a.weight"])
    with pytest.raises(BadInput, match="'b.weight'"):
        check_finite(model, ["a.weight", "b.weight"])
