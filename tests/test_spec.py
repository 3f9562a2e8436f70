import dataclasses
from pathlib import Path

import pytest
import yaml

from lmc.spec import Spec, SpecError, describe, load_params, read_yaml, spec_from_dict
from .fixtures import run_stage


ROOT = Path(__file__).resolve().parents[1]

BAD = [  # (params, words the one-line message must contain)
    ({"learning_rate": 0.1}, ["unknown key 'learning_rate'", "known keys"]),
    ({"optimiser": "sgd"}, ["unknown key 'optimiser'", "did you mean 'optimizer'"]),
    ({"optimizer": "adamw2"}, ["optimizer='adamw2'", "sgd, adam"]),
    ({"lr": -1}, ["lr=-1", "> 0.0"]),
    ({"lr": 0}, ["lr=0", "> 0.0"]),
    ({"lr": "fast"}, ["lr='fast'", "float"]),
    ({"depth": 0}, ["depth=0", ">= 1"]),
    ({"depth": 2.5}, ["depth=2.5", "int"]),
    ({"depth": True}, ["depth=True", "int"]),
    ({"batch_size": 4001}, ["batch_size=4001", "train split (4000)"]),
    ({"alphas": 1}, ["alphas=1", ">= 2"]),
    ({"dataset": "imagenet"}, ["dataset='imagenet'", "mnist5k"]),
    ({"negative_slope": 1.5}, ["negative_slope=1.5", "<= 1.0"]),
    ({"momentum": 1.0}, ["momentum=1.0", "< 1.0"]),
    ({"warmup_epochs": 50}, ["warmup_epochs=50", "epochs=12"]),
    ({"init_seed": -3}, ["init_seed=-3", ">= 0"]),
    ({"model": "resnet"}, ["model='resnet'", "mlp"]),
    ({"augment": "yes"}, ["augment='yes'", "bool"]),
    ({"width": "wide"}, ["width='wide'", "int"]),
    ({"width": 0}, ["width=0", ">= 1"]),
    ({"model": "cnn", "depth": 3}, ["depth=3 is not supported by model=cnn", "depth: 2"]),
    ({"model": "vit", "depth": 1}, ["depth=1 is not supported by model=vit", "depth: 2"]),
    ({"schedule": "step"}, ["schedule='step'", "constant, cosine"]),
    ({"grad_clip": -1.0}, ["grad_clip=-1.0", ">= 0.0"]),
    ({"weight_decay": "none"}, ["weight_decay='none'", "float"]),
    ({"alphas": 11.0}, ["alphas=11.0", "int"]),
    ({"data_root": ""}, ["data_root is empty"]),
    ({"data_root": 3}, ["data_root=3", "str"]),
    ({"download": "no"}, ["download='no'", "bool"]),
    ({"dataset": "cifar"}, ["dataset='cifar'", "cifar10"]),
    ({"pairs": 0}, ["pairs=0", ">= 1"]),
    ({"pairs": 100}, ["pairs=100", "<= 64"]),
    ({"refine_alphas": -1}, ["refine_alphas=-1", ">= 0"]),
    ({"spawn_step": 384}, ["spawn_step=384", "384 steps (12 epochs × 32)"]),
    ({"spawn_step": -1}, ["spawn_step=-1", ">= 0"]),
    ({"align": "git-rebasin"}, ["align='git-rebasin'", "none, weight_matching"]),
    ({"align": "weight_matching", "model": "cnn"}, ["align=weight_matching", "model=cnn", "align: none"]),
    ({"align": "weight_matching", "depth": 1}, ["depth=1", "align: none"]),
    ({"pair": 3}, ["unknown key 'pair'", "did you mean 'pairs'"]),
    ({"lr": float("inf")}, ["lr=inf", "finite"]),
    ({"weight_decay": float("inf")}, ["weight_decay=inf", "finite"]),
    ({"grad_clip": float("-inf")}, ["grad_clip=-inf"]),
    ({"lr": float("nan")}, ["lr=nan"]),
]


@pytest.mark.parametrize("override,words", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_value_gives_one_line_naming_it(override, words):
    with pytest.raises(SpecError) as err:
        spec_from_dict({**dataclasses.asdict(Spec()), **override})
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_params_yaml_holds_every_key_at_its_default():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == {f.name for f in dataclasses.fields(Spec)}
    assert load_params(ROOT / "params.yaml") == Spec(**raw)


def test_int_given_for_float_is_accepted_and_width_may_be_auto():
    assert spec_from_dict({"lr": 1}).lr == 1.0
    assert spec_from_dict({"width": "auto"}).width == "auto"


def test_not_a_mapping_and_broken_yaml(tmp_path):
    with pytest.raises(SpecError, match="mapping"):
        spec_from_dict([1, 2])
    bad = tmp_path / "params.yaml"
    bad.write_text("lr: [0.1\n")
    with pytest.raises(SpecError, match="not valid YAML at line 2"):
        load_params(bad)
    for text in ("[]\n", "0\n", "false\n", "''\n"):  # YAML that is no mapping, falsy or not
        bad.write_text(text)
        with pytest.raises(SpecError, match="expected a mapping of keys to values"):
            load_params(bad)
    bad.write_text("")  # an empty file: every key at its default
    assert load_params(bad) == Spec()


def test_a_key_given_twice_is_refused_not_the_last_one_kept(tmp_path):
    twice = tmp_path / "params.yaml"
    twice.write_text("lr: 0.1\nwidth: 64\nlr: 0.5\n")
    with pytest.raises(SpecError, match=r"not valid YAML at line 3 \(key 'lr' is given twice\)"):
        load_params(twice)
    twice.write_text("base: &b {lr: 0.5}\n")  # YAML's merge key still merges (an anchor, then `<<:`)
    assert read_yaml(twice, "params") == {"base": {"lr": 0.5}}
    twice.write_text("base: &b {lr: 0.5}\nmerged: {<<: *b, width: 64}\n")
    assert read_yaml(twice, "params")["merged"] == {"lr": 0.5, "width": 64}
    twice.write_text("[1, 2]: 3\n")  # a list as a key: YAML's own error, as one line
    with pytest.raises(SpecError, match="not valid YAML at line 1"):
        read_yaml(twice, "params")
    twice.write_text("lr: 1" + "0" * 400 + "\n")  # an int beyond any float
    with pytest.raises(SpecError, match="must be a finite number"):
        load_params(twice)


def test_describe_lists_every_key():
    table = describe()
    assert all(f"`{f.name}`" in table for f in dataclasses.fields(Spec))


@pytest.mark.parametrize("stage", list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]))
def test_every_stage_stops_on_bad_params_before_writing(tmp_path, stage):
    (tmp_path / "params.yaml").write_text("optimizer: adamw2\n")
    proc = run_stage(tmp_path, stage)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: params: optimizer='adamw2' is not allowed; choose one of sgd, adam"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


PARAMS_PAGE = ROOT / "docs/pipeline.md"  # every key; the README's short table names the most used


def docs_params_table() -> dict[str, tuple[str, str]]:
    """{key: (default, meaning)} from the rows of docs/pipeline.md's table under "## Params"."""
    section = PARAMS_PAGE.read_text().split("\n## Params", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| `")]
    table = {key.strip(" `"): (default.strip(" `"), meaning.strip()) for key, default, meaning in rows}
    assert len(table) == len(rows), "a key appears twice in the docs' params table"
    return table


def test_docs_params_table_shows_params_yaml():
    """The table's defaults are params.yaml's values (what `dvc repro` runs), its keys exactly params.yaml's, and
    its meanings the Spec's help strings; `describe(load_params())` prints the table to paste."""
    table = docs_params_table()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(table) == set(raw), "docs/pipeline.md's params table and params.yaml have different keys"
    spec = load_params(ROOT / "params.yaml")
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(Spec)}
    for key, (default, meaning) in table.items():
        assert default == str(getattr(spec, key)), f"docs' params table: {key} is {default}, params.yaml {raw[key]}"
        assert meaning == helps[key], f"docs' params table: the meaning of {key} is not its help in lmc/spec.py"
    assert describe(spec) in PARAMS_PAGE.read_text(), \
        "docs/pipeline.md's params table is stale: paste lmc.spec.describe(lmc.spec.load_params())"


def test_precision_is_recorded_only_away_from_its_default():
    """Results recorded before `precision` existed (fp32) keep their spec and trunk key; bf16 results say so."""
    assert "precision" not in Spec().record()
    assert Spec(precision="bf16").record()["precision"] == "bf16"
    # (the layerwise params are left out at their defaults too: no result made before them depends on them)
    assert set(Spec().record()) == {f.name for f in dataclasses.fields(Spec)} - {"precision", "layerwise_alphas",
                                                                                 "layerwise_samples"}
    assert Spec(layerwise_alphas=11).record()["layerwise_alphas"] == 11


def test_tf32_on_the_cpu_is_one_line():
    with pytest.raises(SpecError, match=r"^params: precision=tf32 is a GPU matmul mode; use it with device: cuda"):
        spec_from_dict({"precision": "tf32"})
    assert spec_from_dict({"precision": "tf32", "device": "cuda"}).precision == "tf32"
    assert spec_from_dict({"precision": "bf16"}).precision == "bf16"
