#!/usr/bin/env python
"""`fit` over `get_dls` against a bare hand-written loop and against PyTorch's DataLoader, side by side on full MNIST.

Each route trains its own copy of the course MLP (same seed, SGD, lr 0.5) one epoch at a time, and the routes take
turns epoch by epoch (in a rotating order), so load on a shared machine hits all alike. We report median seconds per
epoch (training plus the validation pass), the median over rounds of each round's time ratio (the routes of a round ran
back to back), and each route's validation accuracy after epoch 5.

    python bench/training.py                 # bs 50 and 256, 10 timed epochs, 784-50-10
    python bench/training.py --nh 100        # a wider hidden layer
"""
import argparse, contextlib, io, statistics, sys, time
import torch
from torch import nn
from torch.utils.data import DataLoader
from miniai.datasets import get_mnist
from miniai.losses import cross_entropy
from miniai.training import Dataset, accuracy, fit, get_dls

def model_and_opt(nh, lr, seed=42):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, nh), nn.ReLU(), nn.Linear(nh, 10))
    return model, torch.optim.SGD(model.parameters(), lr=lr)

class Bare:
    "A bare hand-written loop: randperm + slicing for training, slices of 2*bs for validation"
    def __init__(self, data, bs, nh, lr):
        (self.x, self.y), (self.xv, self.yv) = data
        self.bs, (self.model, self.opt) = bs, model_and_opt(nh, lr)
    def epoch(self):
        x, y, bs, model, opt = self.x, self.y, self.bs, self.model, self.opt
        idx = torch.randperm(len(x))
        for i in range(0, len(x), bs):
            b = idx[i:i+bs]
            loss = cross_entropy(model(x[b]), y[b])
            loss.backward(); opt.step(); opt.zero_grad()
        tot_loss = tot_acc = 0.; n = 0
        with torch.no_grad():
            for i in range(0, len(self.xv), 2*bs):
                xb, yb = self.xv[i:i+2*bs], self.yv[i:i+2*bs]
                pred = model(xb)
                tot_loss += cross_entropy(pred, yb).item() * len(xb); tot_acc += accuracy(pred, yb).item() * len(xb); n += len(xb)
        return tot_acc / n

class Fit:
    "miniai's `fit`, one epoch per call, over the given loaders"
    def __init__(self, dls, nh, lr): self.dls, (self.model, self.opt) = dls, model_and_opt(nh, lr)
    def epoch(self):
        with contextlib.redirect_stdout(io.StringIO()):
            return fit(1, self.model, cross_entropy, self.opt, *self.dls, progress=False)[1]

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=10, help='timed epochs per route (at least 5)')
    p.add_argument('--bs', type=int, nargs='+', default=[50, 256])
    p.add_argument('--nh', type=int, default=50)
    p.add_argument('--lr', type=float, default=0.5)
    a = p.parse_args()
    (xt, yt), (xv, yv), _ = get_mnist()
    tr, va = Dataset(xt, yt), Dataset(xv, yv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MLP 784-{a.nh}-10, SGD lr {a.lr}, {a.epochs} epochs per route")
    print("| bs | bare loop s/epoch | fit s/epoch | DataLoader s/epoch | fit / bare | DataLoader / fit | valid acc after 5 epochs: bare, fit, DataLoader |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for bs in a.bs:
        routes = {'bare': Bare(((xt, yt), (xv, yv)), bs, a.nh, a.lr), 'fit': Fit(get_dls(tr, va, bs), a.nh, a.lr),
                  'DataLoader': Fit((DataLoader(tr, bs, shuffle=True), DataLoader(va, 2*bs)), a.nh, a.lr)}
        times, acc = {k: [] for k in routes}, {}
        names = list(routes)
        for e in range(max(a.epochs, 5)):
            for k in names[e % 3:] + names[:e % 3]:
                t0 = time.perf_counter(); vacc = routes[k].epoch(); times[k].append(time.perf_counter() - t0)
                if e == 4: acc[k] = vacc
        t = {k: statistics.median(v) for k, v in times.items()}
        ratio = lambda p, q: statistics.median(x / y for x, y in zip(times[p], times[q]))
        r1, r2 = ratio('fit', 'bare'), ratio('DataLoader', 'fit')
        ok &= r1 <= 1.05 and (bs != 50 or (r2 >= 1.3 and acc['fit'] >= 0.97))
        print(f"| {bs} | {t['bare']:.2f} | {t['fit']:.2f} | {t['DataLoader']:.2f} | {r1:.3f} | {r2:.2f} | "
              f"{acc['bare']:.4f}, {acc['fit']:.4f}, {acc['DataLoader']:.4f} |")
    print("targets (fit / bare <= 1.05; at bs 50: DataLoader / fit >= 1.3 and fit's valid acc >= 0.97):", 'met' if ok else 'NOT met')
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
