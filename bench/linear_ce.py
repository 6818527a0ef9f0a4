#!/usr/bin/env python
"""miniai's `linear_cross_entropy` against PyTorch's `F.linear_cross_entropy`, reference path (full logits) and chunked
path (`options=nn.LinearCrossEntropyOptions()`), side by side in one run.

Each measurement is one forward and backward (gradients for the input and the weight, float32, mean reduction) in a
fresh process, so that no route inherits another's memory. The process reports the seconds of that step and the peak
resident memory it added above what the inputs already used. The routes take turns over `--rounds` rounds (their order
rotating), so that load on a shared machine hits all alike; we report the median time of each route and the ratios.

    python bench/linear_ce.py                       # (4096, 512, 32768) and (1024, 256, 131072), 3 rounds
    python bench/linear_ce.py --shapes 2048,256,65536 --rounds 5
    python bench/linear_ce.py --child miniai 1024 256 32768   # one measurement, printed as JSON
"""
import argparse, json, statistics, subprocess, sys, time
import torch, torch.nn.functional as F
from torch import nn
from miniai.losses import cross_entropy, linear_cross_entropy

ROUTES = {'miniai': lambda x, W, t: linear_cross_entropy(x, W, t),
          'torch reference': lambda x, W, t: F.linear_cross_entropy(x, W, t),
          'torch chunked': lambda x, W, t: F.linear_cross_entropy(x, W, t, options=nn.LinearCrossEntropyOptions()),
          'naive': lambda x, W, t: cross_entropy(F.linear(x, W), t)} # the composed route, for the notebook's picture
SHAPES = [(4096, 512, 32768), (1024, 256, 131072)]

def _status(key):
    "A memory figure of this process from /proc/self/status, in bytes"
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'): return int(line.split()[1]) * 1024

def child(route, N, D, V):
    "In a fresh process: seconds and extra peak memory of one forward+backward of `route`"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g).requires_grad_()
    W = (torch.randn(V, D, generator=g) / D**0.5).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    with open('/proc/self/clear_refs', 'w') as f: f.write('5') # reset the peak mark (Linux >= 4.0)
    base = _status('VmRSS')
    t0 = time.perf_counter()
    ROUTES[route](x, W, t).backward()
    secs = time.perf_counter() - t0
    print(json.dumps({'seconds': secs, 'extra': max(_status('VmHWM') - base, 0)}))

def measure(route, N, D, V):
    "One measurement in a fresh process: {'seconds', 'extra' (bytes)}"
    out = subprocess.run([sys.executable, __file__, '--child', route, str(N), str(D), str(V)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=3, help='fresh-process measurements of each route per shape')
    p.add_argument('--shapes', nargs='+', default=[','.join(map(str, s)) for s in SHAPES], help='N,D,V of each shape')
    p.add_argument('--child', nargs=4, metavar=('ROUTE', 'N', 'D', 'V'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child: return child(a.child[0], *map(int, a.child[1:]))
    routes = ['miniai', 'torch reference', 'torch chunked']
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward+backward, {a.rounds} rounds, "
          f"a fresh process per measurement")
    print("| N, D, V | route | median s | extra peak MiB | miniai time / route | miniai memory / route |")
    print("|---|---|---|---|---|---|")
    ok = True
    for shape in a.shapes:
        N, D, V = map(int, shape.split(','))
        res = {r: [] for r in routes}
        for i in range(a.rounds):
            for r in routes[i % 3:] + routes[:i % 3]: res[r].append(measure(r, N, D, V))
        sec = {r: statistics.median(m['seconds'] for m in v) for r, v in res.items()}
        mem = {r: statistics.median(m['extra'] for m in v) for r, v in res.items()}
        for r in routes:
            ratio = '' if r == 'miniai' else f"{sec['miniai'] / sec[r]:.2f} | {mem['miniai'] / mem[r]:.3f}"
            print(f"| {N}, {D}, {V} | {r} | {sec[r]:.2f} | {mem[r] / 2**20:.0f} | {ratio or '- | -'} |")
        ok &= (sec['miniai'] <= sec['torch reference'] and mem['miniai'] <= 0.12 * mem['torch reference']
               and sec['miniai'] <= 0.5 * sec['torch chunked'] and mem['miniai'] <= mem['torch chunked'])
    print("targets (time <= 1.0x and memory <= 0.12x the reference path; time <= 0.5x and memory <= 1.0x the chunked path):",
          'met' if ok else 'NOT met')
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
