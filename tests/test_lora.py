"""LoRA through the real peft on real (random-weight) timm models: what is adapted, that injection changes no
output, that a step moves only the adapters, and that a seed fixes the init."""

from __future__ import annotations

import pytest
import timm
import torch
from peft.tuners.lora import LoraLayer
from timm.layers import Conv2dSame
from torch import nn

from w2s_cli.finetuning.lora import add_lora, lora_targets

# (model, input size): small inputs keep every test well under a second of compute
MODELS = [("test_efficientnet", 64), ("tf_efficientnet_lite0", 64), ("test_vit", 160)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These forwards take milliseconds; on a shared 2-core machine torch's intra-op threads made them take
    seconds (lite0 at 64 px: 2 s with 2 threads under load, 20 ms with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        f = model.forward_features(x)
        return f, model.forward_head(f, pre_logits=True)


@pytest.mark.parametrize("name,size", MODELS)
def test_injection_changes_no_output_and_wraps_exactly_the_targets(name, size):
    model = make(name)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    before = features(model, x)
    originals = dict(model.named_modules())
    targets = lora_targets(model)

    added = add_lora(model, 4)

    assert all(torch.equal(a, b) for a, b in zip(before, features(model, x), strict=True))
    assert added == [f"{t}.lora_{ab}.default.weight" for t in targets for ab in "AB"]
    wrapped = {n for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert wrapped == set(targets)
    for n, m in originals.items():
        if isinstance(m, nn.Conv2d) and (m.groups > 1 or m.kernel_size != (1, 1)):
            assert n not in wrapped  # depthwise and k>1 convs stay as they are
        if isinstance(m, (nn.Linear, nn.Conv2d)) and n not in wrapped:
            assert model.get_submodule(n) is m
    assert "classifier" not in wrapped and "head" not in wrapped
    base = {n.removesuffix(".base_layer.weight") for n in model.state_dict() if n.endswith(".base_layer.weight")}
    assert base == set(targets)  # an adapted module's weight is saved as '<module>.base_layer.weight'


def test_lite0_covers_every_dense_1x1_conv_and_its_same_padded_convs_stay():
    model = make("tf_efficientnet_lite0")
    same = [n for n, m in model.named_modules() if isinstance(m, Conv2dSame)]
    assert same and not set(same) & set(lora_targets(model))  # its Conv2dSame are 3x3/5x5 stride-2 convs
    targets = lora_targets(model)
    assert "conv_head" in targets and "blocks.0.0.conv_pw" in targets and "blocks.6.0.conv_pwl" in targets
    assert len(targets) == 32 and "conv_stem" not in targets


def test_a_1x1_conv2d_same_is_adapted_and_keeps_its_output():
    torch.manual_seed(0)
    model = nn.Sequential(Conv2dSame(8, 16, 1, stride=2), Conv2dSame(16, 16, 3, stride=2)).eval()
    x = torch.randn(2, 8, 15, 15)
    y = model(x)
    assert add_lora(model, 2) == ["0.lora_A.default.weight", "0.lora_B.default.weight"]
    assert isinstance(model[0], LoraLayer) and isinstance(model[1], Conv2dSame)
    assert torch.equal(model(x), y)
    with torch.no_grad():
        model[0].lora_B.default.weight.fill_(0.1)
    assert model(x).shape == y.shape and not torch.equal(model(x), y)


@pytest.mark.parametrize("name,size", MODELS[::2])
def test_a_step_moves_only_the_adapters(name, size):
    model = make(name)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    before = features(model, x)
    added = set(add_lora(model, 4))
    for n, p in model.named_parameters():
        p.requires_grad_(n in added)
    start = {n: t.clone() for n, t in model.state_dict().items()}

    loss = model.forward_head(model.forward_features(x), pre_logits=True).pow(2).mean()
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()

    after = model.state_dict()
    changed = {n for n in start if not torch.equal(start[n], after[n])}
    # every B moves (so every adapter is on the forward path); A's first gradient is B^T(...) = 0
    assert changed == {n for n in added if ".lora_B." in n}
    assert not any(torch.equal(a, b) for a, b in zip(before, features(model, x), strict=True))


def test_the_seed_fixes_the_init():
    def lora_a(seed: int) -> list[torch.Tensor]:
        model = make("test_efficientnet")
        torch.manual_seed(seed)
        add_lora(model, 3)
        return [p for n, p in model.named_parameters() if ".lora_A." in n]

    a, b, c = lora_a(5), lora_a(5), lora_a(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_alpha_sets_the_scale_and_requires_grad_is_left_alone():
    model = make("test_vit")
    model.head.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    add_lora(model, 4, alpha=8)
    assert model.blocks[0].attn.qkv.scaling == {"default": 2.0}
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert p.requires_grad == flags[n.replace(".base_layer.", ".")]


def test_exact_names_only_and_bad_calls():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.head = nn.Sequential()
            self.head.proj = nn.Linear(4, 2)  # a list target 'proj' would also match 'head.proj'

    toy = Toy()
    assert lora_targets(toy) == ["proj"]
    add_lora(toy, 1)
    assert isinstance(toy.proj, LoraLayer) and not isinstance(toy.head.proj, LoraLayer)
    with pytest.raises(ValueError, match="already"):
        add_lora(toy, 1)
    with pytest.raises(ValueError, match="rank"):
        add_lora(Toy(), 0)
    with pytest.raises(ValueError, match="no linear"):
        add_lora(nn.Sequential(nn.Conv2d(3, 3, 3)), 2)
