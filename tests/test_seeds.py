import subprocess
import sys

import numpy as np

from lmc import seeds


def test_derived_seed_is_the_same_in_every_process():
    code = "from lmc import seeds; print(seeds.derive_seed(43, 'data-order', 7))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": str(h)}, cwd=sys.path[0] or ".").stdout for h in (1, 2)}
    assert outs == {f"{seeds.derive_seed(43, 'data-order', 7)}\n"}


def test_purposes_and_counters_give_distinct_seeds():
    values = {seeds.derive_seed(b, p, c) for b in (0, 1) for p in ("a", "b") for c in range(50)}
    assert len(values) == 200


def test_epoch_order_is_a_permutation_and_reruns_identically():
    o = seeds.epoch_order(43, 3, 1000)
    assert sorted(o) == list(range(1000))
    assert np.array_equal(o, seeds.epoch_order(43, 3, 1000))


def test_adjacent_seeds_do_not_replay_each_other_one_epoch_apart():
    """The `seed + epoch` trap: with it, seed s at epoch e+1 equals seed s+1 at epoch e."""
    for s in (43, 118):
        for e in range(10):
            assert not np.array_equal(seeds.epoch_order(s, e + 1, 500), seeds.epoch_order(s + 1, e, 500))
            assert not np.array_equal(seeds.epoch_order(s, e, 500), seeds.epoch_order(s, e + 1, 500))


def test_pair_zero_keeps_the_written_seeds_and_other_pairs_derive_distinct_ones():
    from lmc.spec import Spec
    spec = Spec()
    assert spec.pair_seeds(0) == {"init": 0, "order_a": 43, "order_b": 118, "aug_a": 43, "aug_b": 118}
    seen = [v for pair in range(1, 6) for v in spec.pair_seeds(pair).values()]
    assert len(set(seen)) == len(seen) and not set(seen) & {0, 43, 118}
    assert spec.pair_seeds(3) == Spec().pair_seeds(3)  # a pure function
