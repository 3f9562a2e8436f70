"""Where each stage's outputs live, relative to the repository root (dvc.yaml declares the same)."""
from pathlib import Path

SOURCE = Path("data/source.json")
BETONS = {"train": Path("data/train.beton"), "test": Path("data/test.beton")}
INIT_DIR = Path("data/init")
TWINS_DIR = Path("data/twins")
CURVES = Path("data/interpolation.json")
TRAIN_LIVE = Path("reports/train")
TRAIN_CSV = Path("reports/training.csv")
METRICS = Path("reports/metrics.json")
CURVE_CSV = Path("reports/interpolation.csv")
PAIR_CURVE_CSV = Path("reports/interpolation_pairs.csv")
SUMMARY = Path("reports/summary.md")
FIGURE = Path("reports/interpolation.png")
LAYERWISE = Path("reports/layerwise.json")
LAYERWISE_SUMMARY = Path("reports/layerwise.md")
LAYERWISE_LAYERS = Path("reports/layerwise.csv")
# The numeric environment each computing stage ran in (lmc/numerics.py): tracked by git, not DVC, since it
# differs between machines that compute the same bytes; a reproduction check reads it when bytes differ.
NUMERICS = Path("reports/numerics.json")
# Training's progress while a stage runs (lmc/resume.py): git-ignored, never a DVC output, removed when done.
RESUME_DIR = Path("data/.resume")
STUDY_RESUME_DIR = Path("studies/.resume")


def repro(stage: str, force: bool = False) -> str:
    """The command that (re)builds `stage`, as a user types it at the repository root; `<folder>:<name>` is a
    stage of the pipeline in that folder (studies/<scale>: the studies at one scale)."""
    project, _, name = stage.rpartition(":")
    return f"dvc {f'--cd {project} ' if project else ''}repro {'-f ' if force else ''}{name}"


def init(pair: int) -> Path:
    """Θ0 of twin pair `pair`."""
    return INIT_DIR / f"pair{pair}.pt"


def twin(pair: int, side: str) -> Path:
    """Twin `side` ("a" or "b") of pair `pair`, trained."""
    return TWINS_DIR / f"pair{pair}" / f"{side}.pt"
