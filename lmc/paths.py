"""Where each stage's outputs live, relative to the repository root (dvc.yaml declares the same)."""
from pathlib import Path

SOURCE = Path("data/source.json")
BETONS = {"train": Path("data/train.beton"), "test": Path("data/test.beton")}
INIT = Path("data/init.pt")
TWINS = {"a": Path("data/twins/a.pt"), "b": Path("data/twins/b.pt")}
CURVES = Path("data/interpolation.json")
TRAIN_LIVE = Path("reports/train")
METRICS = Path("reports/metrics.json")
CURVE_CSV = Path("reports/interpolation.csv")
SUMMARY = Path("reports/summary.md")
FIGURE = Path("reports/interpolation.png")
