"""A script for tests/test_distributed.py to launch under torchrun (2 CPU processes on gloo), or alone.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py MODE OUT

MODE: `shards` writes each process's samples per epoch; `metrics` trains with `fit` and writes each process's history;
`head` trains with a `LinearCrossEntropyLoss` head; `accum` trains that head with `GradAccum(3)` and counts DDP's
all-reduces; `fail` trains on data with a nan on rank 1's share;
`ckpt ROUTE [EPOCH BATCH]` trains with a checkpoint every 5 batches (ROUTE: `fast` or `torch` loaders), crashing after
that batch if given, and writes the weights and the history; `logs` trains with a checkpoint, a `CSVLogger` and a
`TensorBoardCB` in OUT/logs, and writes each process's history."""
import json, sys
from pathlib import Path
import torch, torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP
from miniai.losses import LinearCrossEntropyLoss, cross_entropy
from miniai.callbacks import GradAccum
from miniai.training import BatchLoader, Callback, Checkpoint, CheckpointError, Dataset, Schedule, accuracy, fit, get_dls, init_distributed, world

def shards(out):
    "The samples each process sees: in-memory loader and PyTorch's DataLoader route, training and validation"
    n, rank = 103, world()[0]
    ds = Dataset(torch.arange(n), torch.zeros(n))
    res = {}
    torch.manual_seed(rank) # the order must not depend on the processes' own random states: rank 0's counts
    for name, (tdl, vdl) in {'fast': get_dls(ds, ds, 5), 'fast_drop': get_dls(ds, ds, 5, drop_last=True),
                             'torch': get_dls(TensorDataset(ds.x, ds.y), TensorDataset(ds.x, ds.y), 5, num_workers=0)}.items():
        eps = []
        for epoch in range(2):
            if hasattr(tdl, 'sampler') and hasattr(tdl.sampler, 'set_epoch'): tdl.sampler.set_epoch(epoch)
            eps.append([int(v) for xb, _ in tdl for v in xb])
        res[name] = dict(train=eps, n_batches=len(tdl), valid=[int(v) for xb, _ in vdl for v in xb])
    (Path(out)/f'shards{rank}.json').write_text(json.dumps(res))

def data(n, seed, bad=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = (x[:, :4].argmax(1) + (x[:, 4] > 1)) % 4
    if bad is not None: x[bad, 3] = float('nan')
    return x, y

class CountSyncs(Callback):
    "Count the optimizer steps and the all-reduces of each `DistributedDataParallel` wrapper's gradient buckets"
    order = 1 # after `DDPCB` has put the wrappers in place
    def __init__(self): self.steps, self.syncs = 0, {}
    def before_batch(self, run):
        for name, m in (('model', run.model), ('loss_func', run.loss_func)):
            if isinstance(m, DDP) and name not in self.syncs:
                self.syncs[name] = 0
                m.register_comm_hook(name, self.hook)
    def hook(self, name, bucket):
        self.syncs[name] += 1
        return default_hooks.allreduce_hook(dist.group.WORLD, bucket)
    def after_step(self, run): self.steps += 1

def train(out, bs, bad=None, head=False, accum=0):
    "`fit` on synthetic data; with `head`, the last layer is a `LinearCrossEntropyLoss` with weights of its own; `accum`: `GradAccum(accum)`"
    torch.manual_seed(0)
    (xt, yt), (xv, yv) = data(600, 1, bad), data(101, 2)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    loss_func = cross_entropy
    if head: model, loss_func = model[:2], LinearCrossEntropyLoss(16, 4, bias=True)
    params = [*model.parameters(), *(loss_func.parameters() if head else [])]
    opt = torch.optim.SGD(params, lr=0.3)
    metric = (lambda h, y: accuracy(loss_func.linear(h), y)) if head else None
    cbs = [GradAccum(accum), counts := CountSyncs()] if accum else []
    res = fit(3, model, loss_func, opt, *get_dls(Dataset(xt, yt), Dataset(xv, yv), bs), progress=False, metric=metric, cbs=cbs)
    with torch.no_grad(): pred = loss_func.linear(model(xv)) if head else model(xv) # the whole validation set, in this one process
    rank = world()[0]
    (Path(out)/f'metrics{rank}.json').write_text(json.dumps(dict(
        history=res.history.epochs, full_valid=[cross_entropy(pred, yv).item(), accuracy(pred, yv).item()],
        weights=[p.detach().flatten().tolist() for p in params], **(dict(steps=counts.steps, syncs=counts.syncs) if accum else {}))))

class Crash(Callback):
    def __init__(self, at): self.at = at
    def after_batch(self, run):
        if (run.epoch, run.iter) == self.at: raise SystemExit(f"crashed after batch {run.iter} of epoch {run.epoch}")

def ckpt(out, route, at=None):
    "A 2-process run that draws random numbers in the loader and the model, with momentum, a schedule and a checkpoint"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    (xt, yt), (xv, yv) = data(600, 1), data(101, 2)
    if route == 'fast': dls = get_dls(Dataset(xt, yt), Dataset(xv, yv), 10)
    else: dls = get_dls(TensorDataset(xt, yt), TensorDataset(xv, yv), 10, num_workers=0)
    sched = Schedule(torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=3 * len(dls[0])))
    res = fit(3, model, cross_entropy, opt, *dls, progress=False, cbs=[Checkpoint(Path(out)/'ck.pt', every=5), sched, Crash(at)])
    (Path(out)/f'ckpt{world()[0]}.json').write_text(json.dumps(dict(
        history=[{k: v for k, v in e.items() if k != 'seconds'} for e in res.history.epochs], batch_losses=res.history.batch_losses,
        lrs=sched.lrs, weights=[p.detach().flatten().tolist() for p in model.parameters()])))

def logs(out):
    "A 2-process run with a checkpoint and both loggers, into OUT/logs: only rank 0 may write there"
    from miniai.callbacks import CSVLogger, GradClip, TensorBoardCB
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (xt, yt), (xv, yv) = data(600, 1), data(101, 2)
    cbs = [Checkpoint(Path(out)/'ck.pt', every=5), GradClip(1.0), CSVLogger(Path(out)/'logs'/'log.csv'), TensorBoardCB(Path(out)/'logs')]
    res = fit(2, model, cross_entropy, opt, *get_dls(Dataset(xt, yt), Dataset(xv, yv), 10), progress=False, cbs=cbs)
    (Path(out)/f'logs{world()[0]}.json').write_text(json.dumps(dict(epochs=res.history.epochs, batch_losses=res.history.batch_losses)))

if __name__ == '__main__':
    mode, out = sys.argv[1], sys.argv[2]
    init_distributed()
    W = world()[1]
    if mode == 'shards': shards(out)
    elif mode == 'metrics': train(out, 20 // W)
    elif mode == 'head': train(out, 20 // W, head=True)
    elif mode == 'accum': train(out, 20 // W, head=True, accum=3)
    elif mode == 'fail': # a nan in the sample at position 7 = 1 + 3*2 of the first epoch's order: rank 1's fourth
        torch.manual_seed(0); nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4)) # the draws `train` makes first
        train(out, 10, bad=int(torch.randperm(600)[7]))
    elif mode == 'logs': logs(out)
    elif mode == 'ckpt':
        try: ckpt(out, sys.argv[3], tuple(map(int, sys.argv[4:6])) if len(sys.argv) > 4 else None)
        except CheckpointError as e: # each process says what does not fit; the barrier keeps torchrun from stopping one before it has
            print(f"rank {world()[0]}: CheckpointError: {e}", flush=True)
            if dist.is_initialized(): dist.barrier(); dist.destroy_process_group()
            sys.exit(1)
    if dist.is_initialized(): dist.destroy_process_group()
