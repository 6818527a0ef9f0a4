#!/usr/bin/env python
"""Instructions, not seconds: a forward and backward of each loss, and an epoch of `fit` with it, counted by valgrind.

On a shared machine a time ratio moves from run to run: four runs of `bench/losses.py` on one day gave 1.33 to 1.75 at
(50, 10). valgrind's callgrind counts the instructions a process executes: the same count for the same binary and
inputs, whatever else the machine is doing. Each count runs in its own process under callgrind, on one thread
(`OMP_NUM_THREADS=1`: under valgrind the threads take turns, so a second thread's spin-wait would count as work), and
counts only inside the measured loop, which `functools.reduce` drives (`--toggle-collect=functools_reduce`). We report
thousands of instructions per call or per batch, and the ratio of each loss's count to `F.cross_entropy`'s, for:

- one forward and backward at (50, 10): 1000 calls, after 200 to warm up;
- each of the lean route's 13 forward ops alone at (50, 10), with no autograd (bench/_floor.py's `lean_ops`): 1000
  calls after 200; an in-place op runs after a copy into its buffer, which is counted alone and taken off;
- an epoch of `fit` over about 5000 rows of MNIST's training set (100 batches at bs 50, 19 at bs 256) and a fifth as
  many validation rows, after an epoch of a tenth as many batches to warm up. The course MLP 784-50-10 is not trained
  (lr 0), so that every loss sees the same model.

The losses are `F.cross_entropy`, miniai's, and those of bench/_floor.py (with its compiled C++ kernel where a
compiler and ninja are found). Instructions are not time: in an epoch of `fit` at bs 50, the lean route's extra
instructions take two to four and a half times the time per instruction of the rest of the epoch (epoch ratios of 1.13
to 1.30 on this machine), and as long back to back as in the loop, so a loss's share of the instructions understates
its share of the time. What counts give is a figure that does not move, for comparing one version of a loss with
another.

    python bench/instructions.py            # 36 processes under valgrind, 2 at a time: about 45 minutes on 2 cores
    python bench/instructions.py --jobs 4
"""
import argparse, concurrent.futures, contextlib, functools, io, os, shutil, subprocess, sys, tempfile
from pathlib import Path
import torch, torch.nn.functional as F
from miniai.datasets import get_mnist
from miniai.losses import cross_entropy
from miniai.training import Dataset, fit, get_dls
from _floor import FLOOR, lean_ops
from losses import fwd_bwd, inputs
from training import model_and_opt

LOSSES = {'F.cross_entropy': F.cross_entropy, 'miniai cross_entropy (13 ops)': cross_entropy, **FLOOR}
WORKS = ['call', '50', '256'] # a (50, 10) call; an epoch of fit at bs 50; at bs 256
CALLS, ROWS = 1000, 5000 # calls at (50, 10); training rows of an epoch of fit

def batches(bs:int)->int: return max(ROWS // bs, 10)

def measured(f, k):
    "Run `f` k times inside `functools.reduce`: callgrind counts only there"
    functools.reduce(lambda acc, _: f(), range(k), None)

def loaders(data, bs, nb):
    "`get_dls` over the first `nb` batches of the training rows and a fifth as many validation rows"
    (x, y), (xv, yv) = data
    n = nb * bs
    return get_dls(Dataset(x[:n], y[:n]), Dataset(xv[:n//5], yv[:n//5]), bs)

def child(loss, work, data_file):
    "In a process under callgrind: the measured loop of one loss and workload"
    if work in ('op', 'reset'): # one op of the lean route alone, or the copy that resets its buffer
        torch.set_grad_enabled(False) # as in a Function's forward
        op, reset = lean_ops(*inputs(50, 10))[loss]
        step = op if not reset else (lambda: (reset(), op())) if work == 'op' else (lambda: (reset(), None))
        for _ in range(200): step()
        return measured(step, CALLS)
    f = LOSSES[loss]
    if work == 'call':
        x, t = inputs(50, 10)
        step = lambda: fwd_bwd(f, x, t)
        for _ in range(200): step()
        return measured(step, CALLS)
    data, bs = torch.load(data_file), int(work)
    model, opt = model_and_opt(50, 0.)
    def epoch(dls):
        with contextlib.redirect_stdout(io.StringIO()): fit(1, model, f, opt, *dls, progress=False)
    epoch(loaders(data, bs, batches(bs) // 10))
    dls = loaders(data, bs, batches(bs))
    measured(lambda: epoch(dls), 1)

def count(loss, work, data_file, out_dir):
    "Instructions callgrind counted in the measured loop of `child(loss, work)`"
    fd, out = tempfile.mkstemp('.out', dir=out_dir)
    os.close(fd); out = Path(out)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONHASHSEED': '0'}
    subprocess.run(['valgrind', '--tool=callgrind', '--collect-atstart=no', '--toggle-collect=functools_reduce',
                    f'--callgrind-out-file={out}', sys.executable, __file__, '--child', loss, work, data_file],
                   env=env, check=True, capture_output=True)
    return next(int(l.split()[1]) for l in out.read_text().splitlines() if l.startswith('totals:'))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--jobs', type=int, default=os.cpu_count(), help='processes under valgrind at a time')
    p.add_argument('--child', nargs=3, metavar=('LOSS', 'WORK', 'DATA'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child: return child(*a.child)
    if not shutil.which('valgrind'): sys.exit("valgrind is not installed: on Debian or Ubuntu, apt-get install valgrind")
    (x, y), (xv, yv), _ = get_mnist()
    n = max(batches(int(w)) * int(w) for w in WORKS[1:])
    with tempfile.TemporaryDirectory() as d:
        data_file = f'{d}/mnist.pt' # the rows the epochs use, saved once: loading them is quick under valgrind
        torch.save(((x[:n], y[:n]), (xv[:n//5], yv[:n//5])), data_file)
        with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
            jobs = {(k, w): ex.submit(count, k, w, data_file, d) for w in WORKS for k in LOSSES}
            ops = lean_ops(*inputs(50, 10))
            op_jobs = {(k, w): ex.submit(count, k, w, data_file, d) for k, (_, reset) in ops.items() for w in ('op', 'reset')[:1 + bool(reset)]}
            n_ir = {kw: j.result() for kw, j in jobs.items()}
            op_ir = {kw: j.result() / CALLS / 1e3 for kw, j in op_jobs.items()}
    per = {'call': CALLS, **{w: sum(map(len, loaders(((x, y), (xv, yv)), int(w), batches(int(w))))) for w in WORKS[1:]}}
    print(f"torch {torch.__version__}, 1 thread, instructions counted by callgrind (thousands per call or per batch)")
    print(f"| loss | (50, 10) forward and backward | / F.cross_entropy | fit at bs 50, per batch | / F.cross_entropy "
          f"| fit at bs 256, per batch | / F.cross_entropy |")
    print("|---|---|---|---|---|---|---|")
    base = {w: n_ir['F.cross_entropy', w] for w in WORKS}
    for k in LOSSES:
        print(f"| {k} | " + " | ".join(f"{n_ir[k, w] / per[w] / 1e3:.1f} | {n_ir[k, w] / base[w]:.3f}" for w in WORKS) + " |")
    print(f"(an epoch of fit: {batches(50)} training batches at bs 50, {batches(256)} at bs 256, and the validation batches "
          f"of a fifth as many rows at twice the bs: {per['50']} and {per['256']} batches in all)")
    print("\nEach of the lean route's 13 forward ops alone at (50, 10), no autograd (thousands of instructions per call; an "
          "in-place op's count is less that of the copy that resets its buffer):")
    print("| op | thousand instructions |")
    print("|---|---|")
    each = {k: op_ir[k, 'op'] - op_ir.get((k, 'reset'), 0) for k in ops}
    for k, v in each.items(): print(f"| `{k}` | {v:.1f} |")
    call, noop = (n_ir[k, 'call'] / CALLS / 1e3 for k in ('miniai cross_entropy (13 ops)', 'a no-op autograd.Function (x.sum())'))
    print(f"| the 13 together | {sum(each.values()):.1f} |")
    print(f"| a whole call of miniai's loss, less the no-op Function's | {call - noop:.1f} |")

if __name__ == '__main__': sys.exit(main())
