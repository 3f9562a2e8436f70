"""Where each stage's outputs live, relative to the repository root (dvc.yaml declares the same)."""
from pathlib import Path

SOURCE = Path("data/source.json")
BETONS = {"train": Path("data/train.beton"), "test": Path("data/test.beton")}
INIT_DIR = Path("data/init")
TWINS_DIR = Path("data/twins")
CURVES = Path("data/interpolation.json")
TRAIN_LIVE = Path("reports/train")
METRICS = Path("reports/metrics.json")
CURVE_CSV = Path("reports/interpolation.csv")
SUMMARY = Path("reports/summary.md")
FIGURE = Path("reports/interpolation.png")
LAYERWISE = Path("reports/layerwise.json")
LAYERWISE_SUMMARY = Path("reports/layerwise.md")


def init(pair: int) -> Path:
    """Θ0 of twin pair `pair`."""
    return INIT_DIR / f"pair{pair}.pt"


def twin(pair: int, side: str) -> Path:
    """Twin `side` ("a" or "b") of pair `pair`, trained."""
    return TWINS_DIR / f"pair{pair}" / f"{side}.pt"
