"""layerwise: each layer's barrier with only that layer interpolated (mean over the twin pairs), on
layerwise_alphas α and the first layerwise_samples images of each split
-> reports/layerwise.json (metrics: the largest layer barrier per split, and its layer), reports/layerwise.csv
(every layer) and reports/layerwise.md."""
import json

import numpy as np
import pandas as pd
from tqdm import tqdm

from lmc import api, connectivity, layerwise, numerics, paths
from lmc.device import select as select_device
from lmc.io import write_text_atomic
from lmc.spec import load_params
from lmc.stage import entry


@entry
def main() -> None:
    spec = load_params()
    dev = select_device(spec)
    runs = [api.load_run(pair=pair) for pair in range(spec.pairs)]
    title = f"# Layerwise barriers: {spec.model} L={spec.depth} on {spec.dataset}, {spec.optimizer} lr={spec.lr:g}\n"
    if runs[0].status != "ok":
        write_text_atomic(paths.LAYERWISE, json.dumps({"status": runs[0].status}, indent=2) + "\n")
        write_text_atomic(paths.LAYERWISE_LAYERS, "layer\n")
        write_text_atomic(paths.LAYERWISE_SUMMARY, title + f"\n**unstable**: training {runs[0].status}.\n")
        return
    splits = {split: tuple(t[:spec.layerwise_samples] for t in api.load_split(split, dataset=spec.dataset))
              for split in paths.BETONS}
    grid = connectivity.alpha_grid(spec.layerwise_alphas)
    per_pair = []
    total = len(runs) * sum(layerwise.layerwise_batches(runs[0].a, grid, images.shape[1:], len(labels), dev)
                            for images, labels in splits.values())
    with tqdm(total=total, desc="layerwise", unit="batch", disable=None) as bar:
        for run in runs:
            a, b = run.a.state_dict(), run.b.state_dict()
            curves = {split: layerwise.layerwise_curves(run.a, a, b, *tensors, spec.dataset, grid, dev, progress=bar)
                      for split, tensors in splits.items()}
            per_pair.append(layerwise.layer_metrics(curves))
    layers = pd.DataFrame({layer: {k: round(float(np.mean([p[layer][k] for p in per_pair])), 6) for k in m}
                           for layer, m in per_pair[0].items()}).T.rename_axis("layer")
    summary = {"status": "ok"}
    for split in splits:  # a few metrics for `dvc exp show`, not one column per layer
        top = layers[f"barrier_{split}"].idxmax()
        summary |= {f"max_layer_barrier_{split}": layers.loc[top, f"barrier_{split}"], f"max_layer_{split}": top}
    write_text_atomic(paths.LAYERWISE, json.dumps(summary, indent=2) + "\n")
    write_text_atomic(paths.LAYERWISE_LAYERS, layers.to_csv())
    sizes = ", ".join(f"{len(labels)} {split}" for split, (_, labels) in splits.items())
    rows = [title, f"Only the named layer moves from A to B (the others stay at A); α=1 is A with B's layer. "
            f"Error in %, mean of {spec.pairs} twin pair(s), {spec.layerwise_alphas} α, on {sizes} images.", "",
            "| layer | barrier train | barrier test | hybrid error train | hybrid error test |", "|---|---|---|---|---|"]
    for layer, m in layers.iterrows():
        rows.append(f"| {layer} | {100 * m['barrier_train']:.2f} | {100 * m['barrier_test']:.2f} | "
                    f"{100 * m['hybrid_error_train']:.2f} | {100 * m['hybrid_error_test']:.2f} |")
    write_text_atomic(paths.LAYERWISE_SUMMARY, "\n".join(rows) + "\n")
    numerics.record(paths.NUMERICS, "layerwise", spec.device)


if __name__ == "__main__":
    main()
