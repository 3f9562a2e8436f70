"""Model registry, checkpoints, and stacks of models that share one architecture.

A model is an ordinary nn.Module built from an `arch` dict (name + constructor arguments), so a
checkpoint carries everything needed to rebuild it. Twins (and the α-path) are *stacks*: parameter
dicts with a leading model axis, run in one batched pass by `torch.func.vmap`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, vmap

from . import seeds
from .io import write_bytes_atomic
from .paths import repro
from .spec import KERNEL, Spec

VIT_HEADS, VIT_HEAD_DIM = 8, 48  # the paper's attention block: 8 heads of dimension 48
# The paper gives the ViT's size (≈1.08M parameters) but not its embedding width; in this layout the
# count on CIFAR-10 shapes is 106 + 1668·width, so `width: auto` for the ViT means 648 (1.081M).
VIT_PAPER_WIDTH = 648

CHECKPOINT_FORMAT = 1


class MLP(nn.Module):
    """`depth` linear layers with Leaky-ReLU(negative_slope) between them; depth=1 is logistic regression."""

    # The first layer's output is linear in that layer's own parameters, so along the α-path it is the
    # same mix of its outputs at A and B: evaluation computes it twice instead of once per α.
    first_layer = "layers.0"
    # The Spec fields its arch reads (channels: the paper's width, `width: auto`).
    spec_fields = ("depth", "width", "channels", "negative_slope")

    @staticmethod
    def spec_args(spec: Spec) -> dict:
        return {"depth": spec.depth, "width": dense_width(spec), "negative_slope": spec.negative_slope}

    def __init__(self, in_shape: list[int], classes: int, depth: int, width: int, negative_slope: float):
        super().__init__()
        h, w, c = in_shape
        sizes = [h * w * c] + [width] * (depth - 1) + [classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor | None, first: torch.Tensor | None = None,
                first_only: bool = False) -> torch.Tensor:
        """The logits; with `first_only` the first layer's output; given `first`, the rest of the network."""
        if first is None:
            first = self.layers[0](x.flatten(1))
            if first_only:
                return first
        x = first
        for layer in self.layers[1:]:
            x = layer(nn.functional.leaky_relu(x, self.negative_slope))
        return x


class LinearNet(MLP):
    """`depth` linear layers with the identity between them (depth=1 is logistic regression).

    Leaky-ReLU with slope 1 is the identity exactly (x·1.0 == x in floating point).
    """

    spec_fields = ("depth", "width", "channels")

    @staticmethod
    def spec_args(spec: Spec) -> dict:
        return {"depth": spec.depth, "width": dense_width(spec)}

    def __init__(self, in_shape: list[int], classes: int, depth: int, width: int):
        super().__init__(in_shape, classes, depth, width, negative_slope=1.0)


class CNN(nn.Module):
    """One conv layer (`channels` filters of k×k, stride k, no padding), Leaky-ReLU, a linear classifier."""

    first_layer = "hidden"  # see MLP
    spec_fields = ("channels", "negative_slope")

    @staticmethod
    def spec_args(spec: Spec) -> dict:
        return {"channels": spec.channels, "negative_slope": spec.negative_slope}

    def __init__(self, in_shape: list[int], classes: int, channels: int, negative_slope: float, kernel: int = KERNEL):
        super().__init__()
        h, w, c = in_shape
        self.hidden = nn.Conv2d(c, channels, kernel, stride=kernel)
        self.head = nn.Linear(channels * (h // kernel) * (w // kernel), classes)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor | None, first: torch.Tensor | None = None,
                first_only: bool = False) -> torch.Tensor:
        """The logits; with `first_only` the hidden layer's output; given `first`, the rest of the network."""
        if first is None:
            first = self.hidden(x)
            if first_only:
                return first
        return self.head(nn.functional.leaky_relu(first, self.negative_slope).flatten(1))


class LocallyConnected2d(nn.Module):
    """A convolution without weight sharing: its own k×k kernel (and bias) at every output position."""

    def __init__(self, in_channels: int, out_channels: int, in_hw: tuple[int, int], kernel: int):
        super().__init__()
        self.out_hw = (in_hw[0] // kernel, in_hw[1] // kernel)
        positions, fan_in = self.out_hw[0] * self.out_hw[1], in_channels * kernel * kernel
        bound = fan_in ** -0.5  # the bound nn.Conv2d's default init uses, per position
        self.weight = nn.Parameter(torch.empty(positions, out_channels, fan_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels, *self.out_hw).uniform_(-bound, bound))
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = nn.functional.unfold(x, self.kernel, stride=self.kernel)  # (B, C·k·k, P)
        out = torch.einsum("bip,poi->bop", patches, self.weight)
        return out.reshape(x.shape[0], -1, *self.out_hw) + self.bias


class LCCNN(CNN):
    """The CNN's layout with a locally connected hidden layer: locality without weight sharing."""

    def __init__(self, in_shape: list[int], classes: int, channels: int, negative_slope: float, kernel: int = KERNEL):
        super().__init__(in_shape, classes, channels, negative_slope, kernel)
        h, w, c = in_shape
        self.hidden = LocallyConnected2d(c, channels, (h, w), kernel)


class ViT(nn.Module):
    """The paper's attention model: ViT patch embedding, ONE attention block with no skip connection and
    no MLP part, then the ViT's final norm and classifier on the class token.

    Layout as in vit-pytorch: patches -> LayerNorm -> Linear(width) -> LayerNorm, a learned class token
    and positions, pre-norm multi-head attention (heads × head_dim inner width, no qkv bias), an output
    projection, LayerNorm, linear head. Attention is written as batched matmuls so that vmap can stack twins.
    """

    spec_fields = ("width",)

    @staticmethod
    def spec_args(spec: Spec) -> dict:
        return {"width": VIT_PAPER_WIDTH if spec.width == "auto" else spec.width}

    def __init__(self, in_shape: list[int], classes: int, width: int, heads: int = VIT_HEADS,
                 head_dim: int = VIT_HEAD_DIM, patch: int = KERNEL):
        super().__init__()
        h, w, c = in_shape
        tokens, patch_dim, inner = (h // patch) * (w // patch) + 1, c * patch * patch, heads * head_dim
        self.patch, self.heads, self.head_dim = patch, heads, head_dim
        self.patch_norm, self.embed, self.embed_norm = nn.LayerNorm(patch_dim), nn.Linear(patch_dim, width), nn.LayerNorm(width)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.positions = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.attn_norm, self.qkv = nn.LayerNorm(width), nn.Linear(width, 3 * inner, bias=False)
        self.proj, self.norm, self.head = nn.Linear(inner, width), nn.LayerNorm(width), nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        patches = nn.functional.unfold(x, self.patch, stride=self.patch).transpose(1, 2)  # (B, P, C·k·k)
        t = self.embed_norm(self.embed(self.patch_norm(patches)))
        t = torch.cat([self.cls_token.expand(b, -1, -1), t], 1) + self.positions
        n = t.shape[1]
        q, k, v = self.qkv(self.attn_norm(t)).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)
        t = self.proj((weights @ v).transpose(1, 2).reshape(b, n, -1))  # no skip connection, no MLP
        return self.head(self.norm(t[:, 0]))


# Every model: an nn.Module whose constructor takes in_shape, classes and its `spec_args(spec)`, the arch's
# other entries (in the arch's order: checkpoints store it as built), which read only its `spec_fields`.
# tests/test_models.py checks these names against spec.MODELS and the fields against Spec's.
REGISTRY: dict[str, type[nn.Module]] = {"mlp": MLP, "linear": LinearNet, "cnn": CNN, "lc_cnn": LCCNN, "vit": ViT}


def toeplitz_width(channels: int, in_shape, kernel: int = KERNEL) -> int:
    """Hidden width of the dense layer that a CNN or LC-CNN hidden layer embeds into: Co·H'·W'."""
    return channels * (in_shape[0] // kernel) * (in_shape[1] // kernel)


def dense_width(spec: Spec) -> int:
    """The hidden width of mlp and linear: spec.width, or with `auto` the paper's, the Toeplitz width."""
    return toeplitz_width(spec.channels, spec.data["shape"]) if spec.width == "auto" else spec.width


def arch_from_spec(spec: Spec) -> dict:
    """The constructor arguments of the spec's model, and only those (they key the init stage)."""
    d = spec.data
    return {"name": spec.model, "in_shape": list(d["shape"]), "classes": d["classes"],
            **REGISTRY[spec.model].spec_args(spec)}


def build(arch: dict) -> nn.Module:
    args = {k: v for k, v in arch.items() if k != "name"}
    return REGISTRY[arch["name"]](**args)


def init_model(spec: Spec, pair: int = 0) -> nn.Module:
    """Θ0 of twin pair `pair`: a pure function of the architecture and the pair's init seed (pair 0: init_seed)."""
    torch.manual_seed(seeds.derive_seed(spec.pair_seeds(pair)["init"], "init"))
    return build(arch_from_spec(spec))


# ---- checkpoints --------------------------------------------------------------------------------

class CheckpointError(RuntimeError):
    """A missing, damaged or mismatched checkpoint (or another stage's result that a stage reads); the message
    names the file and the stage to rerun."""


def write_payload(path: str | Path, payload: dict) -> None:
    """torch.save `payload`, atomically (temp file, then rename): a killed run never leaves half a file."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes_atomic(path, buf.getvalue())


def read_payload(path: str | Path, kind: str, fmt: int, stage: str) -> dict:
    """What write_payload wrote at `path`, a `kind` ("checkpoint", ...) of format `fmt`; a CheckpointError
    naming the file and the stage to rerun when it is missing, damaged or something else."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{kind} {path} is missing; run `{repro(stage)}` to create it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{kind} {path} is damaged ({type(err).__name__}); "
                              f"rerun `{repro(stage, force=True)}`") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise CheckpointError(f"{kind} {path} is not an lmc {kind} of format {fmt}; "
                              f"rerun `{repro(stage, force=True)}`")
    return payload


def save_checkpoint(path: str | Path, arch: dict, state: dict[str, torch.Tensor], **meta) -> None:
    write_payload(path, {"format": CHECKPOINT_FORMAT, "arch": arch, "meta": meta,
                         "state_dict": {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}})


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module
    arch: dict
    meta: dict


def load_checkpoint(path: str | Path, stage: str = "train", arch: dict | None = None) -> Checkpoint:
    """The module stored at `path`, its arch and meta; a clear CheckpointError when that is impossible, or when
    it was built for another `arch` than the one given (the params changed since `stage` ran)."""
    payload = read_payload(path, "checkpoint", CHECKPOINT_FORMAT, stage)
    if arch is not None and payload["arch"] != arch:
        built = payload["arch"]
        diff = ", ".join(f"{k} {built.get(k)!r} not {arch.get(k)!r}" for k in sorted({*arch, *built})
                         if built.get(k) != arch.get(k))
        raise CheckpointError(f"checkpoint {path} was built for another architecture than params.yaml's ({diff}); "
                              f"rerun `{repro(stage, force=True)}`")
    model = build(payload["arch"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f"checkpoint {path} does not fit its architecture ({first}); "
                              f"rerun `{repro(stage, force=True)}`") from None
    return Checkpoint(model, payload["arch"], payload["meta"])


# ---- stacks -------------------------------------------------------------------------------------

def stack_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


def unstack_state(stacked: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: v[i] for k, v in stacked.items()}


def stacked_forward(model: nn.Module, stacked: dict[str, torch.Tensor], x: torch.Tensor,
                    shared_input: bool = False, **kwargs) -> torch.Tensor:
    """Outputs of every model in the stack: x is (K, B, ...) per model, or (B, ...) if shared_input.
    kwargs go to the model's forward (for `first_only`)."""
    def one(state, inputs):
        return functional_call(model, state, (inputs,), kwargs)
    return vmap(one, in_dims=(0, None if shared_input else 0))(stacked, x)


def looped_forward(model: nn.Module, states: list[dict[str, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """Outputs of every model, one after the other, model k on its own x[k]: (K, B, ...). On the CPU plain
    per-model matmuls beat vmap's batched ones (benchmarks/stacking.txt); training's CPU step uses this."""
    return torch.stack([functional_call(model, state, (x[k],)) for k, state in enumerate(states)])


def stacked_rest(model: nn.Module, stacked: dict[str, torch.Tensor], first: torch.Tensor) -> torch.Tensor:
    """Every model of the stack from its own first-layer output on: first is (K, B, ...)."""
    def one(state, h):
        return functional_call(model, state, (None,), {"first": h})
    return vmap(one)(stacked, first)
