"""The experiment spec: every knob of one twin experiment, typed, documented and validated.

params.yaml holds these keys at its top level (so `dvc exp run -S lr=0.01` works). Every stage
loads the whole file through `load_params`, so a mistake anywhere stops the pipeline with one line
before any work starts, whichever stage DVC happens to run first.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import seeds

PARAMS_FILE = "params.yaml"

# Train/test sizes and image shapes (H, W, C) of each dataset, known before any file is read so that
# shape-dependent mistakes (batch size larger than the train split) are caught up front.
DATASETS = {
    "mnist5k": {"train": 4000, "test": 1000, "shape": (28, 28, 1), "classes": 10},
    "mnist": {"train": 60000, "test": 10000, "shape": (28, 28, 1), "classes": 10},
    "cifar10": {"train": 50000, "test": 10000, "shape": (32, 32, 3), "classes": 10},
    "cifar100": {"train": 50000, "test": 10000, "shape": (32, 32, 3), "classes": 100},
    "tinyimagenet": {"train": 100000, "test": 10000, "shape": (64, 64, 3), "classes": 200},
}
MODELS = ("mlp", "linear", "cnn", "lc_cnn", "vit")  # lmc/models.py REGISTRY's names (a test checks they agree)
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")
ALIGNMENTS = ("none", "weight_matching")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "bf16")
NUMERICS = ("portable", "native")
CPU_STEPS = ("per_model", "stacked")
KERNEL = 4  # hidden-layer kernel (and stride) of cnn and lc_cnn; the vit's patch size


def _field(default: Any, help: str, **checks: Any) -> Any:
    return field(default=default, metadata={"help": help, **checks})


@dataclass(frozen=True)
class Spec:
    """One twin experiment. Defaults: the paper's minimal model (1 hidden ReLU layer, SGD, lr 0.1)."""

    dataset: str = _field("mnist5k", "dataset to train on (mnist5k is bundled; the others are read from data_root)",
                          choices=tuple(DATASETS))
    data_root: str = _field("data/raw", "folder holding the datasets in torchvision's layout (MNIST/raw, "
                            "cifar-10-batches-py, cifar-100-python) and tiny-imagenet-200/")
    download: bool = _field(True, "fetch a missing MNIST or CIFAR into data_root with torchvision")
    model: str = _field("mlp", "architecture from the model registry", choices=MODELS)
    depth: int = _field(2, "number of weight layers L of mlp/linear (2 = one hidden layer; cnn, lc_cnn, vit: 2)", min=1)
    width: int | str = _field(512, "hidden width of mlp/linear, embedding width of vit; auto = the paper's size "
                              "(Toeplitz width channels·H'·W' for mlp/linear, 648 for vit)",
                              min=1, auto=True)
    channels: int = _field(128, "filters Co of the cnn / lc_cnn hidden layer (4×4, stride 4)", min=1)
    negative_slope: float = _field(0.0, "Leaky-ReLU negative slope p (0 = ReLU, 1 = identity)", min=0.0, max=1.0)
    optimizer: str = _field("sgd", "sgd (with momentum) or adam", choices=OPTIMIZERS)
    lr: float = _field(0.1, "peak learning rate", min_exclusive=0.0)
    momentum: float = _field(0.9, "SGD momentum (ignored by adam)", min=0.0, max_exclusive=1.0)
    batch_size: int = _field(128, "minibatch size, up to the whole train split", min=1)
    epochs: int = _field(12, "training epochs", min=1)
    warmup_epochs: int = _field(0, "epochs of linear learning-rate warm-up from 0", min=0)
    schedule: str = _field("constant", "learning rate after warm-up: constant, or cosine decay to 0", choices=SCHEDULES)
    weight_decay: float = _field(0.0, "L2 weight decay (coupled, as torch's SGD and Adam apply it)", min=0.0)
    grad_clip: float = _field(0.0, "clip each twin's gradient to this global L2 norm (0 = off)", min=0.0)
    augment: bool = _field(False, "random translation (up to 2 px) and horizontal flip, seeded per twin")
    init_seed: int = _field(0, "seed of the shared initialization Θ0", min=0)
    order_seed_a: int = _field(43, "data-order seed of twin A", min=0)
    order_seed_b: int = _field(118, "data-order seed of twin B", min=0)
    aug_seed_a: int = _field(43, "augmentation seed of twin A", min=0)
    aug_seed_b: int = _field(118, "augmentation seed of twin B", min=0)
    device: str = _field("cpu", "where training and interpolation run: cpu, or cuda (deterministic algorithms)",
                         choices=DEVICES)
    precision: str = _field("fp32", "training arithmetic: fp32 (the paper's), tf32 (cuda: TF32 matmuls) or bf16 "
                            "(autocast, fp32 master weights); the path is always evaluated in fp32",
                            choices=PRECISIONS, legacy="fp32")
    numerics: str = _field("portable", "CPU kernels: portable (pinned to give the same bytes on any x86-64 CPU; "
                           "docs/reproducibility.md names those checked) or native (this machine's fastest; same "
                           "bytes on one kind of CPU only); see lmc/numerics.py",
                           choices=NUMERICS, legacy="native")
    cpu_step: str = _field("per_model", "how the CPU trains the twins: per_model (plain matmuls model by model, a "
                           "fused optimizer: the faster) or stacked (one vmap'd pass: the earlier step, kept for comparison; "
                           "no committed result uses it); cuda always stacks", choices=CPU_STEPS, legacy="stacked")
    alphas: int = _field(11, "number of equidistant interpolation points on [0, 1], endpoints included", min=2)
    refine_alphas: int = _field(0, "α points added inside each grid interval next to each curve's highest "
                                "interior point (0 = off); the grid's own barrier is still reported", min=0)
    layerwise_alphas: int = _field(5, "α points on each layer's path in the layerwise stage, endpoints included "
                                   "(its cost grows with them; the barriers of the path itself use `alphas`)", min=3,
                                   legacy=5)  # (legacy: the default; no result before them depends on them)
    layerwise_samples: int = _field(1000, "images of each split (its first n, up to its size) the layerwise stage "
                                    "evaluates", min=1, legacy=1000)
    pairs: int = _field(1, "twin pairs trained together; pair 0 uses the seeds above, pair i derives its own "
                        "(init, order, augmentation); barriers get a mean and a 95% interval", min=1, max=64)
    spawn_step: int = _field(0, "A and B share their first k optimizer steps on A's data stream, then B branches "
                             "off (Frankle et al. 2020); 0 = both start at Θ0", min=0)
    align: str = _field("none", "weight_matching: permute B's hidden units onto A's (Ainsworth et al. 2023; mlp "
                        "and linear) before interpolating", choices=ALIGNMENTS)

    @property
    def data(self) -> dict:
        return DATASETS[self.dataset]

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.data["train"] // self.batch_size)

    def record(self) -> dict[str, Any]:
        """Every key and its value, as results record them; a key added after results were first recorded is
        left out at its `legacy` value (the one that reproduces those results), as open_lth names runs."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if "legacy" not in f.metadata or getattr(self, f.name) != f.metadata["legacy"]}

    def pair_seeds(self, pair: int) -> dict[str, int]:
        """The seeds of twin pair `pair` (pair 0: exactly those written above)."""
        named = {"init": self.init_seed, "order_a": self.order_seed_a, "order_b": self.order_seed_b,
                 "aug_a": self.aug_seed_a, "aug_b": self.aug_seed_b}
        return {k: seeds.pair_seed(v, k, pair) for k, v in named.items()}


class SpecError(ValueError):
    """A bad params.yaml entry; its message is the one line the user sees."""


def _finite(value: float | int) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


def _check_value(f: dataclasses.Field, value: Any) -> None:
    m = f.metadata
    if m.get("auto") and value == "auto":
        return
    expected = {"int": int, "float": float, "str": str, "bool": bool}[f.type.split(" | ")[0]]
    allowed = m.get("help", "")
    ok_type = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok_type = True
    if not ok_type:
        raise SpecError(f"params: {f.name}={value!r} must be {expected.__name__} ({allowed})")
    if expected is float and not _finite(value):
        raise SpecError(f"params: {f.name}={value!r} must be a finite number ({allowed})")
    if expected is str and not value.strip():
        raise SpecError(f"params: {f.name} is empty ({allowed})")
    if "choices" in m and value not in m["choices"]:
        raise SpecError(f"params: {f.name}={value!r} is not allowed; choose one of {', '.join(m['choices'])}")
    bounds = [("min", lambda v, b: v >= b, ">="), ("max", lambda v, b: v <= b, "<="),
              ("min_exclusive", lambda v, b: v > b, ">"), ("max_exclusive", lambda v, b: v < b, "<")]
    for key, holds, word in bounds:
        if key in m and not holds(value, m[key]):
            raise SpecError(f"params: {f.name}={value!r} is out of range; it must be {word} {m[key]} ({allowed})")


def spec_from_dict(raw: Any) -> Spec:
    """Validate a mapping of params (unknown keys, types, ranges, combinations) into a Spec."""
    if not isinstance(raw, dict):
        raise SpecError(f"params: expected a mapping of keys to values (one `key: value` a line), got "
                        f"{type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(Spec)}
    for key in raw:
        if key not in fields:
            near = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(fields)}"
            raise SpecError(f"params: unknown key '{key}'{hint}")
    for key, value in raw.items():
        _check_value(fields[key], value)
    values = {k: (float(v) if fields[k].type == "float" else v) for k, v in raw.items()}
    spec = Spec(**values)
    train_size = spec.data["train"]
    if spec.batch_size > train_size:
        raise SpecError(f"params: batch_size={spec.batch_size} is larger than the {spec.dataset} train split "
                        f"({train_size}); use at most {train_size}")
    if spec.warmup_epochs > spec.epochs:
        raise SpecError(f"params: warmup_epochs={spec.warmup_epochs} exceeds epochs={spec.epochs}; "
                        f"use at most {spec.epochs}")
    total_steps = spec.epochs * spec.steps_per_epoch
    if spec.spawn_step >= total_steps:
        raise SpecError(f"params: spawn_step={spec.spawn_step} leaves B no steps of its own: training has "
                        f"{total_steps} steps ({spec.epochs} epochs × {spec.steps_per_epoch}); use less")
    if spec.precision == "tf32" and spec.device != "cuda":
        raise SpecError("params: precision=tf32 is a GPU matmul mode; use it with device: cuda, or precision: "
                        "fp32 or bf16 on the CPU")
    if spec.align != "none" and (spec.model not in ("mlp", "linear") or spec.depth < 2):
        raise SpecError(f"params: align={spec.align} permutes the hidden units of mlp or linear with depth >= 2, "
                        f"not model={spec.model} depth={spec.depth}; use align: none")
    h, w, _ = spec.data["shape"]
    if spec.model in ("cnn", "lc_cnn", "vit"):
        if spec.depth != 2:
            raise SpecError(f"params: depth={spec.depth} is not supported by model={spec.model} "
                            f"(one hidden layer); use depth: 2")
        if h % KERNEL or w % KERNEL:
            raise SpecError(f"params: model={spec.model} needs images that {KERNEL}×{KERNEL} kernels tile, "
                            f"but {spec.dataset} is {h}×{w}; choose another model or dataset")
    return spec


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged by construct_mapping below
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            twice = key in seen
        except TypeError:  # a list or mapping as a key: let YAML's own loader say so
            break
        if twice:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: Path, what: str) -> Any:
    """The YAML file at `path` (params.yaml, studies.yaml), or one SpecError line saying where it is broken."""
    try:
        return yaml.load(path.read_text(), Loader=_StrictLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None)
        raise SpecError(f"{what}: {path} is not valid YAML{where}{f' ({problem})' if problem else ''}; "
                        f"fix it") from None


def env_seconds(name: str, default: float, note: str = "", error: type[SpecError] = SpecError,
                prefix: str = "") -> float:
    """The environment variable `name` as a number of seconds >= 0 (`default` where unset), or one `error` line
    (`prefix`, then what is wrong, with `note` on what the value means)."""
    text = os.environ.get(name, f"{default:g}")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise error(f"{prefix}{name}={text!r} is not a number of seconds >= 0{note}; set one, or unset it for the "
                    f"default {default:g}")
    return value


def load_params(path: str | Path = PARAMS_FILE) -> Spec:
    path = Path(path)
    if not path.exists():
        raise SpecError(f"params: {path} not found; run from the repository root")
    raw = read_yaml(path, "params")
    return spec_from_dict({} if raw is None else raw)  # an empty file: every key at its default


def describe(spec: Spec | None = None) -> str:
    """A markdown table of every key, its value in `spec` (default: Spec's own defaults) and its meaning; the
    README's is `describe(load_params())`, params.yaml's values being the pipeline's defaults."""
    spec = spec or Spec()
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Spec):
        rows.append(f"| `{f.name}` | `{getattr(spec, f.name)}` | {f.metadata['help']} |")
    return "\n".join(rows)
