#!/usr/bin/env python
"""What `fit`'s events and callbacks cost on MNIST, against a bare loop and against `fit` as an earlier commit had it.

Five routes train their own copy of the course MLP (784-50-10, SGD lr 0.5, the same seed) one epoch at a time over
their own loader (a `BatchLoader` with a generator of its own, the same seed), taking turns in a rotating order so
that load on a shared machine hits all alike:

- `bare`: a hand-written loop: forward, loss, `loss.item()`, backward, step, zero_grad; then the validation pass
  (eval mode, no gradients, loss and accuracy summed by batch size);
- `fit`: today's `fit`, with its default callbacks only;
- `fit before`: `fit` of `--before` (default: the commit before the event-loop redesign), loaded from git;
- `4 cbs`: today's `fit` with `Schedule` (one-cycle), `GradClip(1.0)`, `EarlyStopping(patience=1000)` and a
  `Checkpoint` written at the end of each epoch (a new file each epoch: else it would resume);
- `4 cbs before`: the same four callbacks of `--before`, with its `fit`.

`bare`, `fit` and `fit before` end on the same weights, bit for bit, and so do the two `4 cbs` routes: the script
checks it. We report median seconds per epoch, and the median over rounds of each round's time ratio (the routes of a
round ran back to back) with its quartiles. Then the time to resume: from calling `fit` with a checkpoint taken
mid-epoch until its first batch starts, against a fresh `fit` until its first batch.

    OMP_NUM_THREADS=1 python bench/callbacks.py
    python bench/callbacks.py --bs 50 256 --epochs 20
"""
import argparse, contextlib, io, os, statistics, sys, tempfile, time
from pathlib import Path
import torch
from torch import nn
from miniai.datasets import get_mnist
from miniai.losses import cross_entropy
from miniai.training import Callback, CancelFitException, Dataset, accuracy, fit, get_dls
from miniai.callbacks import Checkpoint, EarlyStopping, GradClip, Schedule
from _before import module_before

BEFORE = 'bb2e292' # the last commit before fit became a loop of phases with default callbacks

def model_and_opt(seed=42):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.5)

def bare_epoch(model, opt, train_dl, valid_dl):
    "One epoch of a hand-written loop that does what `fit` does with no callbacks"
    model.train()
    for xb, yb in train_dl:
        loss = cross_entropy(model(xb), yb); loss.item()
        loss.backward(); opt.step(); opt.zero_grad()
    model.eval()
    tot = acc = 0.; n = 0
    with torch.no_grad():
        for xb, yb in valid_dl:
            p = model(xb); tot += cross_entropy(p, yb).item() * len(xb); acc += accuracy(p, yb).item() * len(xb); n += len(xb)
    model.train()
    return tot / n, acc / n

class Route:
    "One copy of the model and its loaders, trained one epoch per call; `cbs(route)` makes the callbacks of a call"
    def __init__(self, fit_fn, data, bs, total_epochs, lib=None, folder=None):
        self.fit_fn, self.lib, self.folder, self.n = fit_fn, lib, folder, 0
        self.model, self.opt = model_and_opt()
        self.dls = get_dls(*data, bs, generator=torch.Generator().manual_seed(0))
        if lib: # the four callbacks, kept across calls (the schedule runs over all epochs); a new checkpoint file per call
            sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, 0.5, total_steps=total_epochs * len(self.dls[0]))
            self.keep = [lib.Schedule(sched), lib.GradClip(1.0), lib.EarlyStopping(patience=1000)]
    def epoch(self):
        self.n += 1
        if self.fit_fn is None: return bare_epoch(self.model, self.opt, *self.dls)
        cbs = self.keep + [self.lib.Checkpoint(Path(self.folder)/f'ck{id(self)}-{self.n}.pt')] if self.lib else []
        with contextlib.redirect_stdout(io.StringIO()): self.fit_fn(1, self.model, cross_entropy, self.opt, *self.dls, progress=False, cbs=cbs)

class FirstBatch(Callback):
    "Note the time the first batch starts, and stop"
    def before_batch(self, run): self.t = time.perf_counter(); raise CancelFitException()

def resume_time(dls, d, trials):
    "Median seconds from calling fit to its first batch: resuming from a checkpoint taken after batch 500, and starting afresh"
    model, opt = model_and_opt()
    class Stop(Callback):
        def after_batch(self, run):
            if run.training and run.iter == 499: raise CancelFitException()
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

def same(*models):
    return all(torch.equal(p, q) for m in models[1:] for p, q in zip(models[0].state_dict().values(), m.state_dict().values()))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, nargs='+', default=[50, 256])
    p.add_argument('--epochs', type=int, default=15, help='timed epochs per route and batch size')
    p.add_argument('--before', default=BEFORE, help='the git revision whose fit and callbacks are the baseline')
    a = p.parse_args()
    (xt, yt), (xv, yv), _ = get_mnist()
    data = Dataset(xt, yt), Dataset(xv, yv)
    old = module_before(a.before, 'training')
    if old is None: sys.exit(f"git cannot show {a.before}:miniai/training.py here: run this in a git checkout, or give --before")
    today = sys.modules['miniai.callbacks']
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MLP 784-50-10, SGD lr 0.5; {a.epochs} timed epochs per route; before = {a.before}")
    print("| bs | bare s/epoch | fit / bare | fit before / bare | 4 cbs / bare | 4 cbs before / bare | fit / fit before | 4 cbs / 4 cbs before |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    with tempfile.TemporaryDirectory() as d:
        for bs in a.bs:
            n = a.epochs + 1
            routes = {'bare': Route(None, data, bs, n), 'fit': Route(fit, data, bs, n), 'fit before': Route(old.fit, data, bs, n),
                      '4 cbs': Route(fit, data, bs, n, today, d), '4 cbs before': Route(old.fit, data, bs, n, old, d)}
            names, times = list(routes), {k: [] for k in routes}
            for e in range(n):
                for k in names[e % 5:] + names[:e % 5]:
                    t0 = time.perf_counter(); routes[k].epoch(); dt = time.perf_counter() - t0
                    if e: times[k].append(dt) # the first round warms up
            if not (same(*(routes[k].model for k in ('bare', 'fit', 'fit before'))) and same(routes['4 cbs'].model, routes['4 cbs before'].model)):
                sys.exit("the routes did not end on the same weights: the comparison is void")
            ratio = lambda x, y: [s / t for s, t in zip(times[x], times[y])]
            med = lambda x, y: statistics.median(ratio(x, y))
            q = lambda x, y: "{:.3f} ({:.3f}-{:.3f})".format(med(x, y), *statistics.quantiles(ratio(x, y), n=4)[::2])
            ok &= med('fit', 'bare') <= 1.03 and statistics.quantiles(ratio('4 cbs', '4 cbs before'), n=4)[0] <= 1.0
            print(f"| {bs} | {statistics.median(times['bare']):.3f} | {q('fit', 'bare')} | {q('fit before', 'bare')} | {q('4 cbs', 'bare')} | "
                  f"{q('4 cbs before', 'bare')} | {q('fit', 'fit before')} | {q('4 cbs', '4 cbs before')} |")
        print("the same weights: bare, fit and fit before; 4 cbs and 4 cbs before")
        print("targets (fit / bare <= 1.03; 4 cbs no slower than before: the lower quartile of 4 cbs / 4 cbs before <= 1):", 'met' if ok else 'NOT met')
        rt = resume_time(get_dls(*data, 50), d, 7)
        print(f"\ntime to the first batch, bs 50, median of 7: resuming after batch 500 {rt['resume']*1e3:.1f} ms, "
              f"starting afresh {rt['fresh']*1e3:.1f} ms")
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
