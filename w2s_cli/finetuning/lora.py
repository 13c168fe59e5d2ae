"""LoRA adapters for a timm backbone, through the real `peft` library.

We adapt the backbone in place (peft's `inject_adapter_in_model`, not `get_peft_model`), so the model keeps
its own methods (`forward_features`, `forward_head`) that the rest of w2s calls. Only 1x1 convolutions and
linear layers are adapted: they carry most of an EfficientNet's or a ViT's weights, and for them LoRA's
low-rank update is exact and cheap; depthwise and k>1 convolutions stay as they are.

peft initialises each `lora_A` from torch's global RNG (kaiming uniform) and each `lora_B` at zero, so seed
torch (`torch.manual_seed`) before `add_lora` for a reproducible run; right after the call the model computes
exactly what it computed before.
"""

from __future__ import annotations

import re

from torch import nn

DEFAULT_SKIP = ("classifier", "head", "fc")


def _is_skipped(name: str, skip: tuple[str, ...]) -> bool:
    return any(name == s or name.startswith(s + ".") for s in skip)


def _is_adaptable(module: nn.Module) -> bool:
    """nn.Linear, or a dense (groups == 1) 1x1 nn.Conv2d; subclasses count (timm's Conv2dSame for tf_ models,
    whose 'same' padding is zero for a 1x1 kernel, so peft's plain-conv LoRA branch matches its output shape)."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and module.groups == 1


def lora_targets(model: nn.Module, skip: tuple[str, ...] = DEFAULT_SKIP) -> list[str]:
    """Names of the modules LoRA adapts: every nn.Linear and every 1x1 nn.Conv2d with groups == 1 (subclasses
    included), except modules whose name is, or starts with, one of `skip` + '.': that is the model's own
    classifier, which w2s does not use (our head is a separate module, trained in full)."""
    return [name for name, m in model.named_modules() if _is_adaptable(m) and not _is_skipped(name, skip)]


def add_lora(
    model: nn.Module, rank: int, *, alpha: float | None = None, skip: tuple[str, ...] = DEFAULT_SKIP
) -> list[str]:
    """Inject LoRA adapters of rank `rank` into the modules of `lora_targets(model, skip)`, in place, and return
    the names of the parameters added (`<module>.lora_A.default.weight`, `<module>.lora_B.default.weight`).

    The scale is `alpha / rank` (alpha defaults to `rank`, a scale of 1). `lora_B` starts at zero, so outputs are
    unchanged until a step is taken; `lora_A` comes from torch's global RNG: seed torch first. No existing
    parameter's `requires_grad` is changed (peft would freeze them all): which parameters train is the caller's
    choice. An adapted module's own weights move one level down, e.g. `blocks.0.0.conv_pw.weight` becomes
    `blocks.0.0.conv_pw.base_layer.weight` in `state_dict()`.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    from peft import LoraConfig, inject_adapter_in_model  # lazy: importing peft imports transformers
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ValueError("model already has peft adapters")
    targets = lora_targets(model, skip)
    if not targets:
        raise ValueError("model has no linear or dense 1x1 conv layer to adapt")
    trainable = {p: p.requires_grad for p in model.parameters()}
    # A string is full-matched against each module name; a list would also match any name that ends with
    # '.' + an entry (a top-level 'proj' would pull in 'head.proj'), so the exact names go in as one regex.
    pattern = "|".join(re.escape(t) for t in targets)
    config = LoraConfig(
        r=rank, lora_alpha=rank if alpha is None else alpha, target_modules=pattern, lora_dropout=0.0, bias="none"
    )
    inject_adapter_in_model(config, model)

    adapted = [name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    if adapted != targets:  # guards the matching above against a change in peft
        raise RuntimeError(f"peft adapted {sorted(set(adapted) ^ set(targets))} unlike the targets asked for")
    added = []
    for name, p in model.named_parameters():
        if p in trainable:
            p.requires_grad_(trainable[p])
        else:
            added.append(name)
    return added
