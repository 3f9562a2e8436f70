"""interpolate: error and loss of Θ(α) of every twin pair on both splits -> data/interpolation.json."""
import json

from tqdm import tqdm

from lmc import api, connectivity, numerics, paths
from lmc.device import select as select_device
from lmc.io import write_text_atomic
from lmc.spec import load_params
from lmc.stage import entry


@entry
def main() -> None:
    spec = load_params()
    dev = select_device(spec)
    runs = [api.load_run(pair=pair) for pair in range(spec.pairs)]
    curves = {"alpha": connectivity.alpha_grid(spec.alphas).tolist(), "status": runs[0].status}
    if runs[0].status == "ok":
        splits = {split: api.load_split(split, dataset=spec.dataset) for split in paths.BETONS}
        twins = [(run.a.state_dict(), run.b.state_dict()) for run in runs]
        total = api.curve_batches(spec, {split: len(labels) for split, (_, labels) in splits.items()})
        with tqdm(total=total, desc="interpolate", unit="batch", disable=None) as bar:
            curves = api.experiment_curves(spec, runs[0].a, twins, splits, dev, progress=bar)
    write_text_atomic(paths.CURVES, json.dumps(curves, indent=1) + "\n")

    numerics.record(paths.NUMERICS, "interpolate", spec.device)

if __name__ == "__main__":
    main()
