#!/usr/bin/env python
"""What `CSVLogger` (and `TensorBoardCB`) cost `fit` on MNIST's MLP, side by side in one run.

Three routes train their own copy of the course MLP (784-50-10, SGD lr 0.5, the same seed) one epoch per `fit` call over
their own loader (a `BatchLoader` with a generator of its own, the same seed), taking turns in a rotating order so that
load on a shared machine hits all alike:

- `fit`: `fit` with its default callbacks;
- `csv`: the same with a `CSVLogger` (a new file each epoch, as a new run), a row flushed per batch;
- `tb`: the same with a `TensorBoardCB` (a new folder each epoch), when tensorboard is installed.

The three end on the same weights, bit for bit: the script checks it. It reports the median seconds per epoch of `fit`,
and the median over rounds of each round's time ratio to `fit` (the routes of a round ran back to back) with its
quartiles.

    OMP_NUM_THREADS=1 python bench/logs.py
    python bench/logs.py --bs 50 256 --epochs 30
"""
import argparse, contextlib, io, statistics, sys, tempfile, time
from pathlib import Path
import torch
from torch import nn
from miniai.datasets import get_mnist
from miniai.losses import cross_entropy
from miniai.training import Dataset, fit, get_dls
from miniai.callbacks import CSVLogger

def model_and_opt(seed=42):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.5)

class Route:
    "One copy of the model and its loaders, trained one epoch per call; `make(i)` builds the logger of call i (None: no logger)"
    def __init__(self, data, bs, make):
        self.model, self.opt = model_and_opt()
        self.dls, self.make, self.n = get_dls(*data, bs, generator=torch.Generator().manual_seed(0)), make, 0
    def epoch(self):
        self.n += 1
        cbs = [self.make(self.n)] if self.make else []
        with contextlib.redirect_stdout(io.StringIO()): fit(1, self.model, cross_entropy, self.opt, *self.dls, progress=False, cbs=cbs)

def same(*models):
    return all(torch.equal(p, q) for m in models[1:] for p, q in zip(models[0].state_dict().values(), m.state_dict().values()))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, nargs='+', default=[256])
    p.add_argument('--epochs', type=int, default=30, help='timed epochs per route and batch size')
    a = p.parse_args()
    (xt, yt), (xv, yv), _ = get_mnist()
    data = Dataset(xt, yt), Dataset(xv, yv)
    try:
        from miniai.callbacks import TensorBoardCB
        TensorBoardCB('unused')
    except ModuleNotFoundError: TensorBoardCB = None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MLP 784-50-10, SGD lr 0.5; {a.epochs} timed epochs per route")
    print("| bs | batches | fit s/epoch | csv / fit | tb / fit |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for bs in a.bs:
            routes = {'fit': Route(data, bs, None), 'csv': Route(data, bs, lambda i: CSVLogger(Path(d)/f'{bs}-{i}.csv'))}
            if TensorBoardCB: routes['tb'] = Route(data, bs, lambda i: TensorBoardCB(Path(d)/f'tb-{bs}-{i}'))
            names, times = list(routes), {k: [] for k in routes}
            for e in range(a.epochs + 1):
                for k in names[e % len(names):] + names[:e % len(names)]:
                    t0 = time.perf_counter(); routes[k].epoch(); dt = time.perf_counter() - t0
                    if e: times[k].append(dt) # the first round warms up
            if not same(*(r.model for r in routes.values())): sys.exit("the routes did not end on the same weights: the comparison is void")
            rows = (Path(d)/f'{bs}-1.csv').read_text().count('\n') - 1
            assert rows == len(routes['fit'].dls[0]) + 1, 'a row per batch and one for the validation'
            ratio = lambda x: [s / t for s, t in zip(times[x], times['fit'])]
            q = lambda x: "{:.3f} ({:.3f}-{:.3f})".format(statistics.median(ratio(x)), *statistics.quantiles(ratio(x), n=4)[::2]) if x in times else '-'
            print(f"| {bs} | {len(routes['fit'].dls[0])} | {statistics.median(times['fit']):.3f} | {q('csv')} | {q('tb')} |")
        print("the same weights on every route; ratios: median over rounds (quartiles)")

if __name__ == '__main__': main()
