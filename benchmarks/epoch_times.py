"""Seconds per training epoch of each model as twins on the prepared mnist5k (run `dvc repro prepare` first).

    python benchmarks/epoch_times.py     # prints model, parameter count, seconds of the 2nd epoch
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.header

from benchmarks.header import header  # noqa: E402
from lmc import data, models, paths  # noqa: E402
from lmc.spec import Spec  # noqa: E402
from lmc.train import train_twins  # noqa: E402

SETTINGS = [dict(model="mlp"), dict(model="mlp", width="auto"), dict(model="linear"), dict(model="cnn"),
            dict(model="lc_cnn"), dict(model="vit"), dict(model="vit", width="auto")]


def main() -> None:
    print(header())
    for overrides in SETTINGS:
        spec = Spec(epochs=2, **overrides)
        model = models.init_model(spec)
        loaders = [data.twin_loader(paths.BETONS["train"], spec.batch_size, s)
                   for s in (spec.order_seed_a, spec.order_seed_b)]
        ends = []
        train_twins(spec, model, loaders, [spec.aug_seed_a, spec.aug_seed_b],
                    on_epoch=lambda _: ends.append(time.perf_counter()))
        count = sum(p.numel() for p in model.parameters())
        print(f"{overrides}  params={count:,}  {ends[1] - ends[0]:.2f} s/epoch")


if __name__ == "__main__":
    main()
