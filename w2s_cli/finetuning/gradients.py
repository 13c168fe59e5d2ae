"""Gradient features: per sample, the gradient of the network's output with respect to exactly the parameters
that `w2s finetune --train SPEC` trains, at the point finetuning starts from, randomly projected to k values.

In the kernel regime a finetune is a linear model on these features (docs/theory.md, "Finetuning in the
kernel regime"), so their effective rank is the finetuning dimension d^FT and the ridgeless pipeline run on
them is the linearised finetune.

How the C outputs enter: one row per sample, the gradient of s(x) = (1/sqrt C) * sum_c xi_c f_c(x), with signs
xi_c = +-1 drawn from the projection seed. Its kernel <grad s(x), grad s(x')> has expectation over the signs
(1/C) sum_c K_cc(x, x'), the average of the per-class empirical NTKs: the pseudo-NTK of Mohamadi, Bae &
Sutherland (2023), with random signs instead of all ones. The all-ones sum fails exactly at the LP-FT start:
a linear head fitted to targets whose rows sum to one (one-hot labels, a ridgeless teacher's outputs) has
columns summing to zero, so sum_c f_c is a constant and every backbone gradient of it vanishes.

Projection (LoGra/LogIX and TRAK style), regenerated from (seed, tensor index), never stored whole: the
weight of a linear or 1x1 convolution (stride 1, no padding, one group) has per-sample gradient
sum_t delta_t a_t^T over positions t, projected as sum_t (P_out^T delta_t)(P_in^T a_t)^T; every other trained
tensor (depthwise and kxk convolutions, norm affines, biases) gets a dense Gaussian projection of its
flattened per-sample gradient (computed with torch.func). Entries are N(0, 1/k), so E[<Pg, Pg'>] = <g, g'>;
k is split over the trained tensors in proportion to sqrt(parameter count), at least 1 each (the head's
bias, whose gradient is the same for every sample, is kept exact; so is any tensor no larger than its share).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from w2s_cli.errors import W2SError
from w2s_cli.finetuning.network import Student, cut, set_trainable
from w2s_cli.options.recipe import TrainSpec

OUTPUTS = "s(x) = sum_c xi_c f_c(x) / sqrt(C), xi_c = +-1 from the projection seed (signed pseudo-NTK)"


def _rng(seed: int, *key: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, 16, *key]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def output_signs(C: int, seed: int) -> torch.Tensor:
    """xi (C,): the signs with which the C outputs enter s(x)."""
    return torch.randint(0, 2, (C,), generator=_rng(seed, 0)).double().mul(2).sub(1)


def default_head(width: int, C: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The start head when no finetune result is given: coef (width, C) with N(0, 1/width) entries (the scale
    of a freshly initialised linear layer, so s's backbone gradient is as large as a trained head's of unit
    row norm), intercept 0. Not a zero head: at a zero head every backbone gradient is zero."""
    g = _rng(seed, 1)
    return (torch.randn(width, C, generator=g, dtype=torch.float64) / math.sqrt(width)).numpy(), np.zeros(C)


def _kron_module(m: nn.Module) -> bool:
    """Whether a module's weight gradient is sum_t delta_t a_t^T over positions (a Kronecker pair projects it)."""
    if isinstance(m, nn.Linear):
        return True
    return (
        isinstance(m, nn.Conv2d)
        and tuple(m.kernel_size) == (1, 1)
        and tuple(m.stride) == (1, 1)
        and m.groups == 1
        and (m.padding in ((0, 0), "valid") or m.padding == "same")
    )


DENSE_LIMIT = 1 << 24  # entries of a dense projection matrix above which a layer's weight is projected factored


@dataclass
class TensorBlock:
    """One trained tensor's share of the features. `taped`: a linear/1x1-conv weight, whose per-sample gradient
    comes from its module's activations and output gradients (else from torch.func). `mode`: `exact` (its
    share is at least its size: kept as it is), `dense` (one Gaussian matrix) or `kronecker` (k_out x k_in)."""

    name: str
    shape: tuple[int, ...]
    taped: bool
    mode: str = "exact"
    k_out: int = 0
    k_in: int = 0
    k: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def record(self) -> dict[str, Any]:
        r = {"name": self.name, "numel": self.numel, "k": self.k, "mode": self.mode}
        return {**r, "k_out": self.k_out, "k_in": self.k_in} if self.mode == "kronecker" else r

    def share(self, target: int) -> int:
        """Take up to `target` values; return how many are left over (for the next tensor)."""
        if target >= self.numel:
            self.mode, self.k = "exact", self.numel
        elif self.taped and self.numel * target > DENSE_LIMIT:  # k_out * k_in <= target, both <= the layer's
            self.mode = "kronecker"
            self.k_out = max(1, min(self.shape[0], math.isqrt(target)))
            self.k_in = min(self.numel // self.shape[0], target // self.k_out)
            self.k = self.k_out * self.k_in
        else:
            self.mode, self.k = "dense", target
        return target - self.k


def plan_blocks(student: Student, names: list[str], k: int | None) -> list[TensorBlock]:
    """Each trained tensor's block of the features, in `names` order; k None: exact (identity, for tests)."""
    modules, params = dict(student.named_modules()), dict(student.named_parameters())
    blocks = []
    for n in names:
        owner, _, leaf = n.rpartition(".")
        blocks.append(TensorBlock(n, tuple(params[n].shape), leaf == "weight" and _kron_module(modules[owner])))
    if k is None:
        for b in blocks:
            b.share(b.numel)
        return blocks
    fixed = [b for b in blocks if b.name == "head.bias"]  # the same (1/sqrt C) xi for every sample: kept exact
    for b in fixed:
        b.share(b.numel)
    k -= sum(b.k for b in fixed)
    blocks_all, blocks = blocks, [b for b in blocks if b not in fixed]
    if k < len(blocks):
        raise W2SError(
            f"--proj-dim {k + sum(b.k for b in fixed)}: needs at least one value per trained tensor "
            f"({len(blocks)} here) and the head's bias ({sum(b.k for b in fixed)})"
        )
    weight = np.sqrt([b.numel for b in blocks])
    share = np.floor((k - len(blocks)) * weight / weight.sum()).astype(int) + 1
    share[np.argsort(-weight)[: k - int(share.sum())]] += 1  # the remainder to the largest tensors
    carry = 0
    for b, s in zip(blocks, share, strict=True):
        carry = b.share(int(s) + carry)
    return blocks_all


class GradientFeatures:
    """The function an extraction writes: images (B, 3, H, W) -> projected gradient features (B, k). The
    student's frozen prefix runs without gradients; its trained part runs with them (needs_grad).
    `inputs`: row positions -> the frozen prefix's outputs (a finetune's cache); given, the function takes
    those instead of images (and an extraction reads them through it)."""

    needs_grad = True

    def __init__(
        self,
        student: Student,
        names: list[str],
        xi: torch.Tensor,
        k: int | None,
        seed: int,
        inputs: Callable[[list[int]], torch.Tensor] | None = None,
    ) -> None:
        self.student, self.names, self.seed, self.inputs = student, names, seed, inputs
        self.blocks = plan_blocks(student, names, k)
        self.xi = xi
        self._proj: dict[tuple[str, str], torch.Tensor] = {}
        self._taped: dict[str, list] = {}
        modules = dict(student.named_modules())
        self._hooks = [
            modules[b.name.rpartition(".")[0]].register_forward_hook(self._tape(b.name)) for b in self.blocks if b.taped
        ]

    @property
    def width(self) -> int:
        return sum(b.k for b in self.blocks)

    def _tape(self, name: str) -> Callable:
        def hook(module, inputs, output):
            if name in self._taped and output.requires_grad:
                slot = self._taped[name]
                slot.append(inputs[0].detach())
                output.register_hook(lambda g: slot.append(g.detach()))

        return hook

    def matrix(self, i: int, which: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        """The projection matrix `which` of block i, N(0, 1/cols), regenerated from (seed, i, which)."""
        key = (str(i), which)
        if key not in self._proj:
            g = _rng(self.seed, 2, i, ("in", "out", "dense").index(which))
            self._proj[key] = torch.randn(rows, cols, generator=g) / math.sqrt(cols)
        p = self._proj[key]
        if p.device != like.device or p.dtype != like.dtype:
            p = self._proj[key] = p.to(like.device, like.dtype)
        return p

    def scalar(self, out: torch.Tensor) -> torch.Tensor:
        xi = self.xi.to(out.device, out.dtype)
        return out @ xi / math.sqrt(len(xi))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.gradients(x), dim=1)

    def gradients(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's (B, k) part for a batch of images (or of the prefix's outputs), in block order."""
        self.student.to(x.device)
        with torch.no_grad():
            a = x if self.inputs is not None else self.student.cut.prefix(x)
        parts: dict[str, torch.Tensor] = {}
        parts.update(self._kron_parts(a))
        parts.update(self._dense_parts(a))
        return [parts[b.name].detach() for b in self.blocks]

    def _kron_parts(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """Kronecker blocks from one batched forward and backward of sum_b s(x_b): samples do not interact in
        eval mode, so each module's output gradient for sample b is that of s(x_b)."""
        kron = [(i, b) for i, b in enumerate(self.blocks) if b.taped]
        if not kron:
            return {}
        self._taped = {b.name: [] for _, b in kron}
        try:
            with torch.enable_grad():
                total = self.scalar(self.student(a)).sum()
                params = dict(self.student.named_parameters())
                torch.autograd.grad(total, [params[b.name] for _, b in kron], allow_unused=True)
            taped = self._taped
        finally:
            self._taped = {}
        parts = {}
        for i, b in kron:
            if not taped[b.name]:  # a trained module the forward never runs (timm's own classifier): zero
                parts[b.name] = a.new_zeros(len(a), b.k)
                continue
            if len(taped[b.name]) != 2:
                raise RuntimeError(f"{b.name}: its module ran {len(taped[b.name]) // 2} times in one forward")
            act, delta = (_positions(t) for t in taped[b.name])  # (B, T, d_in), (B, T, d_out)
            if b.mode == "kronecker":
                delta = delta @ self.matrix(i, "out", delta.shape[-1], b.k_out, delta)
                act = act @ self.matrix(i, "in", act.shape[-1], b.k_in, act)
                parts[b.name] = torch.einsum("bto,bti->boi", delta, act).flatten(1)
            else:
                parts[b.name] = self.project(i, b, torch.einsum("bto,bti->boi", delta, act).flatten(1))
        return parts

    def project(self, i: int, b: TensorBlock, flat: torch.Tensor) -> torch.Tensor:
        """A block's flattened per-sample gradients (B, numel), projected as the block's mode says."""
        return flat if b.mode == "exact" else flat @ self.matrix(i, "dense", flat.shape[1], b.k, flat)

    def _dense_parts(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dense blocks: exact per-sample gradients (torch.func vmap of grad), then projected."""
        from torch.func import functional_call, grad, vmap

        dense = [(i, b) for i, b in enumerate(self.blocks) if not b.taped]
        if not dense:
            return {}
        named = dict(self.student.named_parameters())
        params = {b.name: named[b.name].detach() for _, b in dense}

        def s(p: dict[str, torch.Tensor], one: torch.Tensor) -> torch.Tensor:
            return self.scalar(functional_call(self.student, p, (one.unsqueeze(0),))).squeeze(0)

        with torch.enable_grad():
            g = vmap(grad(s), in_dims=(None, 0))(params, a)
        return {b.name: self.project(i, b, g[b.name].detach().flatten(1)) for i, b in dense}

    def close(self) -> None:
        for h in self._hooks:
            h.remove()

    def record(self) -> dict[str, Any]:
        return {
            "kind": "gaussian per trained tensor: kronecker (large linear/1x1-conv weights), dense, or exact",
            "k": self.width,
            "seed": self.seed,
            "scale": "N(0, 1/k) entries: E[<Pg, Pg'>] = <g, g'>",
            "blocks": [b.record() for b in self.blocks],
        }


def _positions(t: torch.Tensor) -> torch.Tensor:
    """A layer's input or output as (B, T, d): conv maps (B, d, H, W) -> (B, HW, d), tokens (B, ..., d) as they are."""
    if t.ndim == 4:
        return t.flatten(2).transpose(1, 2)
    return t.reshape(t.shape[0], -1, t.shape[-1])


def gradient_student(
    model: nn.Module, name: str, spec: TrainSpec, head: tuple[np.ndarray, np.ndarray], lora_seed: int
) -> tuple[Student, list[str]]:
    """The student `w2s finetune --train spec` would train from `head` (LoRA adapters seeded as it seeds them,
    added to `model` in place), and the names of its trained parameters (set_trainable's list)."""
    lora: list[str] = []
    if spec.kind == "lora":
        from w2s_cli.finetuning.lora import add_lora

        torch.manual_seed(lora_seed)
        lora = add_lora(model, spec.size)
    student = Student(model, cut(model, spec, name), *head)
    return student, set_trainable(student, spec, lora)


def distortion(fn: GradientFeatures, x: torch.Tensor) -> dict[str, Any]:
    """How well the projection keeps inner products, on the inputs x (images, or the prefix's outputs when fn
    reads those): the Gram matrices of the exact per-sample gradients and of the features, compared in
    float64 (relative error of the diagonal; error of the off-diagonal entries relative to sqrt(G_ii G_jj);
    correlation of the off-diagonal entries)."""
    exact = GradientFeatures(fn.student, fn.names, fn.xi, None, fn.seed, fn.inputs)
    try:
        E = torch.cat(exact.gradients(x), dim=1).double()
    finally:
        exact.close()
    F = fn(x).double()
    G, H = E @ E.T, F @ F.T
    d = G.diagonal().sqrt().clamp_min(1e-300)
    diag = ((H.diagonal() - G.diagonal()).abs() / d**2).cpu().numpy()
    upper = torch.triu_indices(len(x), len(x), 1)
    off = ((H - G).abs() / torch.outer(d, d))[upper[0], upper[1]].cpu().numpy()
    g, h = G[upper[0], upper[1]].cpu().numpy(), H[upper[0], upper[1]].cpu().numpy()
    corr = float(np.corrcoef(g, h)[0, 1]) if len(g) > 1 and g.std() > 0 and h.std() > 0 else None
    return {
        "rows": len(x),
        "exact_width": E.shape[1],
        "diagonal_relative_error": {"mean": float(diag.mean()), "max": float(diag.max())},
        "off_diagonal_error": {"mean": float(off.mean()), "max": float(off.max())} if len(off) else None,
        "off_diagonal_correlation": corr,
        "expected_about": round(math.sqrt(2 / fn.width), 4),
    }
