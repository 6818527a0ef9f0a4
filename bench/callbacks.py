#!/usr/bin/env python
"""What callbacks and checkpoints cost on MNIST, side by side in one run.

Three routes train their own copy of the course MLP (784-50-10, SGD lr 0.5) one epoch at a time, taking turns in a
rotating order so that load on a shared machine hits all alike:

- `before`: `fit` as it was before callbacks, loaded from git (`--before REV`, default the commit before them);
- `fit`: today's `fit`, with no callbacks;
- `checkpoint`: today's `fit` with `Checkpoint(every=100)` (writes to a temporary folder).

We report median seconds per epoch and the median over rounds of each round's time ratio, with its quartiles.
Then the time to resume: from calling `fit` with a checkpoint taken mid-epoch until its first batch starts, against a
fresh `fit` until its first batch.

    python bench/callbacks.py
    python bench/callbacks.py --bs 50 256 --epochs 12
"""
import argparse, contextlib, io, statistics, sys, tempfile, time
from pathlib import Path
import torch
from torch import nn
from miniai.datasets import get_mnist
from miniai.losses import cross_entropy
from miniai.training import Callback, CancelFitException, Checkpoint, Dataset, fit, get_dls
from _before import module_before

BEFORE = '0511426' # the last commit whose fit had no callbacks

def model_and_opt(seed=42):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.5)

class Route:
    "One copy of the model, trained one epoch per call by `fit_fn`; with `ck`, a folder: a new `Checkpoint(every=100)` file there each epoch"
    def __init__(self, fit_fn, dls, ck=None): self.fit_fn, self.dls, self.ck, self.n, (self.model, self.opt) = fit_fn, dls, ck, 0, model_and_opt()
    def epoch(self):
        self.n += 1
        kw = dict(cbs=[Checkpoint(Path(self.ck)/f'ck{id(self)}-{self.n}.pt', every=100)]) if self.ck else {} # a new file: else it would resume
        with contextlib.redirect_stdout(io.StringIO()): self.fit_fn(1, self.model, cross_entropy, self.opt, *self.dls, progress=False, **kw)

class FirstBatch(Callback):
    "Note the time the first batch starts, and stop"
    def before_batch(self, run): self.t = time.perf_counter(); raise CancelFitException()

def resume_time(dls, d, trials):
    "Median seconds from calling fit to its first batch: resuming from a checkpoint taken after batch 500, and starting afresh"
    model, opt = model_and_opt()
    class Stop(Callback):
        def after_batch(self, run):
            if run.iter == 499: raise CancelFitException()
    ck = Path(d)/'resume.pt'
    with contextlib.redirect_stdout(io.StringIO()): fit(1, model, cross_entropy, opt, *dls, progress=False, cbs=[Checkpoint(ck, every=500), Stop()])
    out = {}
    for name, cbs in (('resume', lambda: [Checkpoint(ck)]), ('fresh', lambda: [])):
        ts = []
        for _ in range(trials):
            model, opt = model_and_opt(); fb = FirstBatch()
            t0 = time.perf_counter(); fit(1, model, cross_entropy, opt, *dls, progress=False, cbs=cbs() + [fb])
            ts.append(fb.t - t0)
        out[name] = statistics.median(ts)
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, nargs='+', default=[50, 256])
    p.add_argument('--epochs', type=int, default=10, help='timed epochs per route and batch size')
    p.add_argument('--before', default=BEFORE, help='the git revision whose fit is the baseline')
    a = p.parse_args()
    (xt, yt), (xv, yv), _ = get_mnist()
    old = module_before(a.before, 'training')
    if old is None: sys.exit(f"git cannot show {a.before}:miniai/training.py here: run this in a git checkout, or give --before")
    old = old.fit
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MLP 784-50-10, SGD lr 0.5; {a.epochs} epochs per route; baseline fit of {a.before}")
    print("| bs | before s/epoch | fit s/epoch | checkpoint s/epoch | fit / before (quartiles) | checkpoint / fit (quartiles) |")
    print("|---|---|---|---|---|---|")
    ok = True
    with tempfile.TemporaryDirectory() as d:
        for bs in a.bs:
            dls = get_dls(Dataset(xt, yt), Dataset(xv, yv), bs)
            routes = {'before': Route(old, dls), 'fit': Route(fit, dls), 'checkpoint': Route(fit, dls, d)}
            names, times = list(routes), {k: [] for k in routes}
            for e in range(a.epochs + 1):
                for k in names[e % 3:] + names[:e % 3]:
                    t0 = time.perf_counter(); routes[k].epoch(); dt = time.perf_counter() - t0
                    if e: times[k].append(dt) # the first round warms up
            r1 = [x / y for x, y in zip(times['fit'], times['before'])]
            r2 = [x / y for x, y in zip(times['checkpoint'], times['fit'])]
            q = lambda r: "{:.3f}-{:.3f}".format(*statistics.quantiles(r, n=4)[::2])
            m = {k: statistics.median(v) for k, v in times.items()}
            ok &= statistics.median(r1) <= 1.02 and statistics.median(r2) <= 1.05
            print(f"| {bs} | {m['before']:.3f} | {m['fit']:.3f} | {m['checkpoint']:.3f} | {statistics.median(r1):.3f} ({q(r1)}) | {statistics.median(r2):.3f} ({q(r2)}) |")
        print("targets (fit / before <= 1.02; checkpoint every 100 batches / fit <= 1.05):", 'met' if ok else 'NOT met')
        rt = resume_time(get_dls(Dataset(xt, yt), Dataset(xv, yv), 50), d, 7)
        print(f"\ntime to the first batch, bs 50, median of 7: resuming after batch 500 {rt['resume']*1e3:.1f} ms, "
              f"starting afresh {rt['fresh']*1e3:.1f} ms")
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
