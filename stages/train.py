"""train: twins A and B from Θ0, in lockstep -> data/twins/{a,b}.pt and per-epoch curves."""
import math
import sys

from dvclive import Live
from tqdm import tqdm

from lmc import data, device, models, paths
from lmc.spec import load_params
from lmc.stage import entry
from lmc.train import train_twins


@entry
def main() -> None:
    spec = load_params()
    dev = device.select(spec)  # a missing GPU stops here, before any work
    init = models.load_checkpoint(paths.INIT, stage="init")
    train_path = paths.BETONS["train"]
    order_seeds = {"a": spec.order_seed_a, "b": spec.order_seed_b}
    train = data.read_split(train_path)  # one copy in memory for both twins
    loaders = [data.MemoryTwinLoader(train, spec.batch_size, seed) for seed in order_seeds.values()]
    with Live(str(paths.TRAIN_LIVE), dvcyaml=False, save_dvc_exp=False, report=None) as live, \
            tqdm(total=spec.epochs * len(loaders[0]), desc="train A|B", unit="step", disable=None) as bar:
        def log(stats):
            for i, twin in enumerate(order_seeds):
                for name, value in ((f"loss_{twin}", stats.loss[i]), (f"acc_{twin}", stats.acc[i])):
                    if math.isfinite(value):  # a diverged epoch logs only the flag below
                        live.log_metric(name, value)
            live.log_metric("diverged", int(stats.diverged))
            live.next_step()
            bar.set_postfix_str(f"epoch {stats.epoch + 1} loss {stats.loss[0]:.3f}|{stats.loss[1]:.3f}")
        result = train_twins(spec, init.model, loaders, [spec.aug_seed_a, spec.aug_seed_b], progress=bar, on_epoch=log,
                             device=dev)
    if result.status != "ok":
        print(f"train: a twin diverged in epoch {result.diverged_epoch + 1}; "
              f"the report will show this run as unstable", file=sys.stderr)
    for i, (twin, path) in enumerate(paths.TWINS.items()):
        models.save_checkpoint(path, init.arch, models.unstack_state(result.state, i),
                               twin=twin, status=result.status, diverged_epoch=result.diverged_epoch,
                               order_seed=order_seeds[twin])


if __name__ == "__main__":
    main()
