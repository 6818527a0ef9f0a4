#!/usr/bin/env python
"""Forward+backward of `miniai.losses.cross_entropy` against `F.cross_entropy`, side by side.

Time: both run interleaved in one process, and we report the ratio of median times (miniai / torch), so that load on a
shared machine hits both alike. Memory: each implementation runs one forward+backward in a fresh process; we report
the peak resident memory it added above what the inputs already used.

    python bench/losses.py            # the three shapes of the course
    python bench/losses.py --reps 31
    python bench/losses.py --before 95d1f73   # also time the cross entropy of that commit (default: the one before the lean route)

With `--before REV` (a git checkout is needed), both time tables also time `cross_entropy` as commit REV had it,
interleaved with the other two in the same loop, so that "no slower than before" is one run's ratio.

Last, the floor: one forward and backward at (50, 10) of each loss of bench/_floor.py (one op with no autograd
`Function`, a no-op `Function`, a 6-op `Function` on PyTorch's own kernels, and where a C++ compiler and ninja are
found the lean route's formula compiled as one C++ `Function`), in turns with both cross entropies;
then each of the lean route's 13 forward ops alone (bench/_floor.py's `lean_ops`, no autograd), and `exp_` alone on
50 to 2560 numbers, on one thread and on all of them, in turns. An in-place op runs after a copy into its buffer,
timed alone and taken off.
"""
import argparse, json, statistics, subprocess, sys, time
import torch, torch.nn.functional as F
from miniai.losses import cross_entropy
from _before import module_before
from _floor import FLOOR, lean_ops

SHAPES = [(50_000, 10), (8192, 1000), (2048, 32768)]
SMALL = [(50, 10), (256, 10), (1000, 10), (4000, 10)]
IMPLS = {'miniai': cross_entropy, 'torch': F.cross_entropy}

BEFORE = '95d1f73' # the last commit before the lean route

def inputs(n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g).requires_grad_(), torch.randint(0, c, (n,), generator=g)

def fwd_bwd(f, x, t):
    x.grad = None
    f(x, t).backward()

def times(n, c, reps):
    "Median seconds of forward+backward for each implementation, run interleaved"
    x, t = inputs(n, c)
    ts = {k: [] for k in IMPLS}
    for i in range(reps + 3):
        for k, f in (IMPLS.items() if i % 2 else reversed(IMPLS.items())):
            t0 = time.perf_counter(); fwd_bwd(f, x, t); dt = time.perf_counter() - t0
            if i >= 3: ts[k].append(dt)
    return {k: statistics.median(v) for k, v in ts.items()}

def _status(key):
    "A memory figure of this process from /proc/self/status, in bytes"
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'): return int(line.split()[1]) * 1024

def child(impl, n, c):
    "Run in a fresh process: the peak memory one forward+backward adds above the inputs"
    x, t = inputs(n, c)
    # Reset this process's peak-RSS mark (Linux >= 4.0). getrusage's ru_maxrss would not do: it keeps the
    # parent's size across fork and exec.
    with open('/proc/self/clear_refs', 'w') as f: f.write('5')
    base = _status('VmRSS')
    fwd_bwd(IMPLS[impl], x, t)
    print(json.dumps({'extra': max(_status('VmHWM') - base, 0)}))

def extra_mem(impl, n, c):
    out = subprocess.run([sys.executable, __file__, '--child', impl, str(n), str(c)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)['extra']

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=15, help='timed runs of each implementation per shape')
    p.add_argument('--before', default=BEFORE, help="a git revision whose cross_entropy both time tables also time ('' to skip)")
    p.add_argument('--child', nargs=3, metavar=('IMPL', 'N', 'C'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child: return child(a.child[0], int(a.child[1]), int(a.child[2]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.reps} interleaved runs per shape")
    old = module_before(a.before, 'losses') if a.before else None
    if old: IMPLS['before'] = old.cross_entropy
    elif a.before: print(f"(git cannot show {a.before}:miniai/losses.py here: no column for it)")
    b = f" | miniai / {a.before}" if old else ""
    print(f"| shape (N, C) | time miniai / torch{b} | extra peak MB, miniai | extra peak MB, torch | memory ratio |")
    print("|---|---|---|---|---|" + ("---|" if old else ""))
    ok, slower = True, False
    for n, c in SHAPES:
        t = times(n, c, a.reps)
        m = {k: extra_mem(k, n, c) for k in ('miniai', 'torch')}
        tr, mr = t['miniai'] / t['torch'], m['miniai'] / max(m['torch'], 1)
        ok &= tr <= 1.0 and (c < 1000 or mr <= 0.5)
        if old: slower |= t['miniai'] > t['before']
        b = f" | {t['miniai'] / t['before']:.2f}" if old else ""
        print(f"| ({n}, {c}) | {tr:.2f} ({t['miniai']*1e3:.1f} ms / {t['torch']*1e3:.1f} ms){b} | "
              f"{m['miniai']/2**20:.1f} | {m['torch']/2**20:.1f} | {mr:.2f} |")
    print(f"targets (time ratio <= 1.0 everywhere; memory ratio <= 0.5 at C >= 1000): {'met' if ok else 'NOT met'}")
    print()
    print("Training-sized batches (target at (50, 10): <= 1.6x): here a call costs a fixed overhead of Python and op dispatch,")
    print("which PyTorch's single C++ kernel does not pay.")
    b = f" | miniai / {a.before} | {a.before} us/call" if old else ""
    print(f"| shape (N, C) | time miniai / torch | miniai us/call | torch us/call{b} |")
    print("|---|---|---|---|" + ("---|---|" if old else ""))
    small_ok = True
    for n, c in SMALL:
        t = times(n, c, a.reps * 20)
        if (n, c) == (50, 10): small_ok = t['miniai'] / t['torch'] <= 1.6
        if old: slower |= t['miniai'] > t['before']
        b = f" | {t['miniai'] / t['before']:.2f} | {t['before']*1e6:.0f}" if old else ""
        print(f"| ({n}, {c}) | {t['miniai'] / t['torch']:.2f} | {t['miniai']*1e6:.0f} | {t['torch']*1e6:.0f}{b} |")
    print("target (at (50, 10), time ratio <= 1.6):", 'met' if small_ok else 'NOT met'); ok &= small_ok
    if old: print(f"no shape slower than {a.before}:", 'met' if not slower else 'NOT met'); ok &= not slower
    IMPLS.pop('before', None)
    floor(a.reps * 20)
    return 0 if ok else 1

def floor(reps):
    "Where the time of a (50, 10) call goes: the engine and Function costs that no Python route avoids, and the cost of one op"
    x, t = inputs(50, 10)
    xd = x.detach()
    parts = {'F.cross_entropy': lambda: fwd_bwd(F.cross_entropy, x, t),
             'miniai cross_entropy (13 ops)': lambda: fwd_bwd(cross_entropy, x, t),
             **{k: (lambda f: lambda: fwd_bwd(f, x, t))(f) for k, f in FLOOR.items()},
             'one small op alone, (x - m) on (50, 10), no autograd': lambda: xd - xd}
    ts = {k: [] for k in parts}
    for i in range(reps):
        for k, f in parts.items():
            t0 = time.perf_counter(); f(); ts[k].append(time.perf_counter() - t0)
    print(f"\nWhere a (50, 10) call's time goes ({torch.get_num_threads()} threads, median us of forward and backward):")
    print("| loss | us | / F.cross_entropy |")
    print("|---|---|---|")
    base = statistics.median(ts['F.cross_entropy'])
    for k, v in ts.items(): print(f"| {k} | {statistics.median(v)*1e6:.1f} | {statistics.median(v) / base:.2f} |")
    print("The lean route is 13 such ops in forward (its gradient included) and none in backward for g = 1.")
    ops_alone(x, t, reps)

def per_call(f, k=50):
    "Seconds per call of `f`, over `k` calls back to back"
    t0 = time.perf_counter()
    for _ in range(k): f()
    return (time.perf_counter() - t0) / k

def ops_alone(x, t, reps):
    "Each op of the lean route alone at (50, 10), and exp_ alone by size, on 1 thread and on all, in turns"
    nt = torch.get_num_threads()
    threads = sorted({1, nt})
    lean, by_size = lean_ops(x, t), {}
    for n in (50, 100, 500, 2560): # exp_ by size: from how many numbers it hands work to other threads
        b, src = torch.empty(n), torch.rand(n) - 1
        by_size[f'exp_ alone on {n} numbers'] = (lambda b=b: b.exp_(), lambda b=b, src=src: b.copy_(src))
    ops = {**lean, **by_size}
    ts = {}
    with torch.no_grad():
        for _ in range(max(reps // 20, 5)):
            for th in threads:
                torch.set_num_threads(th)
                for k, (op, reset) in ops.items():
                    step = op if reset is None else lambda: (reset(), op())
                    ts.setdefault((k, th), []).append(per_call(step) - (per_call(reset) if reset else 0))
    torch.set_num_threads(nt)
    med = {kt: statistics.median(v) * 1e6 for kt, v in ts.items()}
    print("\nEach of the lean route's 13 forward ops alone at (50, 10), no autograd (median us per call; an in-place op's time"
          " is less that of the copy that resets its buffer), on " + " and on ".join(f"{th} thread{'s' * (th > 1)}" for th in threads) + ":")
    print("| op | " + " | ".join(f"us, {th} thread{'s' * (th > 1)}" for th in threads) + (f" | {nt} threads / 1 |" if nt > 1 else " |"))
    print("|---|" + "---|" * (len(threads) + (nt > 1)))
    row = lambda k: print(f"| `{k}` | " + " | ".join(f"{med[k, th]:.2f}" for th in threads) + (f" | {med[k, nt] / med[k, 1]:.2f} |" if nt > 1 else " |"))
    for k in lean: row(k)
    print(f"| the {len(lean)} together | " + " | ".join(f"{sum(med[k, th] for k in lean):.1f}" for th in threads) + (" | |" if nt > 1 else " |"))
    for k in by_size: row(k)

if __name__ == '__main__': sys.exit(main())
