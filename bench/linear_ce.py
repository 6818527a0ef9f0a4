#!/usr/bin/env python
"""miniai's `linear_cross_entropy` against PyTorch's `F.linear_cross_entropy`, side by side in one run.

Time and extra peak memory of one forward and backward (gradients for the input and the weight, mean reduction):
- float32 (the default): miniai, miniai as commit BEFORE had it, PyTorch's reference path (full logits) and its chunked
  path (`options=nn.LinearCrossEntropyOptions()`);
- bfloat16 (`--dtype bfloat16`): miniai, PyTorch's bfloat16 path, and the three bare bfloat16 matmuls of the same shape
  (`x @ W.T`, `z @ W`, `z.T @ x`: the limit), on each thread count of `--threads`. With `--accuracy`, also the error of
  the loss and of each gradient against float64 (PyTorch's chunked path in float64 on the same bfloat16-rounded inputs),
  for logits of the usual size and for large ones (the weight scaled so that logits reach the tens).

Each measurement runs in a fresh process, so that no route inherits another's memory: in bfloat16 a first call warms up
the matmul kernels (oneDNN builds its AMX kernels on first use), then one call is measured. The process reports the
seconds of that call and the peak resident memory it added above what the inputs already used. The routes take turns
over `--rounds` rounds (their order rotating), so that load on a shared machine hits all alike; we report the median
time of each route and the ratios.

    python bench/linear_ce.py                                # float32: (4096, 512, 32768) and (1024, 256, 131072)
    python bench/linear_ce.py --dtype bfloat16 --accuracy    # bfloat16: issue 38's three shapes, 1 and 2 threads
    python bench/linear_ce.py --shapes 2048,256,65536 --rounds 5
    python bench/linear_ce.py --child miniai 1024 256 32768 bfloat16 1   # one measurement, printed as JSON
"""
import argparse, json, statistics, subprocess, sys, time
from pathlib import Path
import torch, torch.nn.functional as F
from torch import nn
from miniai.losses import cross_entropy, linear_cross_entropy
from _before import module_before

BEFORE = '21c9f8b' # the last commit before the bfloat16 route

def _matmuls(x, W, t):
    "The three matmuls of a forward and backward, bare: the limit for any route"
    with torch.no_grad(): z = x @ W.t(); dx = z @ W; dW = z.t() @ x
    return dx, dW

ROUTES = {'miniai': lambda x, W, t: linear_cross_entropy(x, W, t),
          'torch reference': lambda x, W, t: F.linear_cross_entropy(x, W, t),
          'torch chunked': lambda x, W, t: F.linear_cross_entropy(x, W, t, options=nn.LinearCrossEntropyOptions()),
          'matmuls': _matmuls,
          'naive': lambda x, W, t: cross_entropy(F.linear(x, W), t)} # the composed route, for the notebook's picture
SHAPES = {'float32': [(4096, 512, 32768), (1024, 256, 131072)],
          'bfloat16': [(2048, 512, 32768), (8192, 1024, 32768), (4096, 1024, 131072)]}

def bf16_flags()->str:
    "The CPU's bfloat16 instructions as Linux lists them (AMX tiles, AVX-512 dot products), and PyTorch's CPU capability"
    info = Path('/proc/cpuinfo')
    flags = (', '.join(f for f in ('amx_bf16', 'avx512_bf16') if f in info.read_text()) or 'none') if info.exists() else 'unknown (no /proc/cpuinfo)'
    return f"CPU capability {torch.backends.cpu.get_cpu_capability()}; bfloat16 flags: {flags}"

def _status(key):
    "A memory figure of this process from /proc/self/status, in bytes"
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'): return int(line.split()[1]) * 1024

def inputs(N, D, V, dtype, scale=1., requires_grad=True):
    "Features, a weight whose logits have about `scale` standard deviation, and class-index targets, from seed 0"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g).to(dtype)
    W = (torch.randn(V, D, generator=g) * (scale / D**0.5)).to(dtype)
    return x.requires_grad_(requires_grad), W.requires_grad_(requires_grad), torch.randint(0, V, (N,), generator=g)

def child(route, N, D, V, dtype='float32', threads=None):
    "In a fresh process: seconds and extra peak memory of one forward+backward of `route`"
    if threads: torch.set_num_threads(int(threads))
    x, W, t = inputs(N, D, V, getattr(torch, dtype))
    f = module_before(BEFORE, 'losses').linear_cross_entropy if route == 'before' else ROUTES[route]
    def step():
        out = f(x, W, t)
        if torch.is_tensor(out): out.backward()
        x.grad = W.grad = None
    if dtype != 'float32': step() # warm up: the first low-precision matmul of a shape builds its kernels
    with open('/proc/self/clear_refs', 'w') as fh: fh.write('5') # reset the peak mark (Linux >= 4.0)
    base = _status('VmRSS')
    t0 = time.perf_counter()
    out = f(x, W, t)
    if torch.is_tensor(out): out.backward()
    secs = time.perf_counter() - t0
    print(json.dumps({'seconds': secs, 'extra': max(_status('VmHWM') - base, 0)}))

def measure(route, N, D, V, dtype='float32', threads=None):
    "One measurement in a fresh process: {'seconds', 'extra' (bytes)}"
    args = [route, str(N), str(D), str(V), dtype] + ([str(threads)] if threads else [])
    out = subprocess.run([sys.executable, __file__, '--child', *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)

def errors(N, D, V, scale):
    "Error of the bfloat16 loss and gradients of torch and miniai against float64 on the same bfloat16 inputs"
    x, W, t = inputs(N, D, V, torch.bfloat16, scale, requires_grad=False)
    def run(f, dtype):
        xs, Ws = x.to(dtype, copy=True).requires_grad_(), W.to(dtype, copy=True).requires_grad_()
        loss = f(xs, Ws, t); loss.backward()
        return [v.double() for v in (loss.detach(), xs.grad, Ws.grad)]
    ref = run(lambda x, W, t: F.linear_cross_entropy(x, W, t, options=nn.LinearCrossEntropyOptions()), torch.float64)
    with torch.no_grad(): zmax = max((x[i:i+512].double() @ W.double().t()).abs().max().item() for i in range(0, N, 512))
    res = {}
    for name, f in (('torch', F.linear_cross_entropy), ('miniai', linear_cross_entropy)):
        out = run(f, torch.bfloat16)
        res[name] = [abs(out[0] - ref[0]).item() / abs(ref[0]).item()]
        for o, r in zip(out[1:], ref[1:]):
            res[name] += [((o - r).norm() / r.norm()).item(), F.cosine_similarity(o.flatten(), r.flatten(), 0).item()]
    return zmax, res

def accuracy_table(shapes, scales):
    "Print the error table of `errors` at each shape and logit scale; return whether miniai's errors are at most torch's and its cosines at least"
    print("| N, D, V | max abs logit | route | loss | dx | 1 - cos dx | dW | 1 - cos dW |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for N, D, V in shapes:
        for scale in scales:
            zmax, res = errors(N, D, V, scale)
            for name, e in res.items():
                print(f"| {N}, {D}, {V} | {zmax:.1f} | {name} | {e[0]:.1e} | {e[1]:.2e} | {1 - e[2]:.1e} | {e[3]:.2e} | {1 - e[4]:.1e} |")
            m, tc = res['miniai'], res['torch']
            ok &= m[0] <= tc[0] and m[1] <= tc[1] and m[3] <= tc[3] and m[2] >= tc[2] and m[4] >= tc[4]
    return ok

def speed_table(dtype, shapes, rounds, threads, routes):
    """Print the median seconds and extra peak memory of each route at each shape and thread count (fresh processes,
    taking turns), with miniai's ratios to each; return {(threads, shape): (sec, mem)}, each a dict by route"""
    print("| threads | N, D, V | route | median s | extra peak MiB | miniai time / route | miniai memory / route |")
    print("|---|---|---|---|---|---|---|")
    out = {}
    for th in threads:
        for N, D, V in shapes:
            res = {r: [] for r in routes}
            for i in range(rounds):
                k = i % len(routes)
                for r in routes[k:] + routes[:k]: res[r].append(measure(r, N, D, V, dtype, th))
            sec = {r: statistics.median(m['seconds'] for m in v) for r, v in res.items()}
            mem = {r: statistics.median(m['extra'] for m in v) for r, v in res.items()}
            for r in routes:
                ratio = '- | -' if r == 'miniai' else f"{sec['miniai'] / sec[r]:.2f} | {mem['miniai'] / mem[r]:.3f}"
                print(f"| {th or torch.get_num_threads()} | {N}, {D}, {V} | {r} | {sec[r]:.3f} | {mem[r] / 2**20:.0f} | {ratio} |")
            out[th, (N, D, V)] = sec, mem
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
    p.add_argument('--rounds', type=int, help='fresh-process measurements of each route per shape (default: 3 for float32, 5 for bfloat16)')
    p.add_argument('--shapes', nargs='+', help='N,D,V of each shape (default: per dtype)')
    p.add_argument('--threads', nargs='+', type=int, help='thread counts to run bfloat16 on (default: 1 and all)')
    p.add_argument('--accuracy', action='store_true', help='bfloat16: also the accuracy table against float64')
    p.add_argument('--scales', nargs='+', type=float, default=[1., 8.], help='logit scales of the accuracy table')
    p.add_argument('--child', nargs='+', metavar='ARG', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child: return child(a.child[0], *map(int, a.child[1:4]), *a.child[4:])
    shapes = [tuple(map(int, s.split(','))) for s in a.shapes] if a.shapes else SHAPES[a.dtype]
    low = a.dtype != 'float32'
    a.rounds = a.rounds or (5 if low else 3) # on 2 threads about one fresh process in three runs its bfloat16 matmuls at half speed here
    routes = ['miniai', 'torch reference', 'matmuls'] if low else ['miniai', 'before', 'torch reference', 'torch chunked']
    threads = (a.threads or [1, torch.get_num_threads()]) if low else [None]
    print(f"torch {torch.__version__}, {a.dtype}, forward+backward, {a.rounds} rounds, a fresh process per measurement"
          + (" (after one warm-up call)" if low else f", {torch.get_num_threads()} threads; 'before' is miniai at {BEFORE}"))
    if low: print(bf16_flags())
    ok = True
    for sec, mem in speed_table(a.dtype, shapes, a.rounds, threads, routes).values():
        if low: ok &= (sec['miniai'] <= 0.8 * sec['torch reference'] and sec['matmuls'] >= 0.5 * sec['miniai']
                       and mem['miniai'] <= 0.2 * mem['torch reference'])
        else: ok &= (sec['miniai'] <= sec['torch reference'] and mem['miniai'] <= 0.12 * mem['torch reference']
                     and sec['miniai'] <= 0.5 * sec['torch chunked'] and mem['miniai'] <= mem['torch chunked'])
    if low: print("targets (time <= 0.8x torch's, the three matmuls >= 0.5 of miniai's time, memory <= 0.2x torch's):",
                  'met' if ok else 'NOT met')
    else: print("targets (time <= 1.0x and memory <= 0.12x the reference path; time <= 0.5x and memory <= 1.0x the chunked "
                "path):", 'met' if ok else 'NOT met')
    if low and a.accuracy:
        print("\nAccuracy against float64, bfloat16 inputs: relative error of the loss, relative Frobenius error and cosine of each gradient")
        acc = accuracy_table(shapes, a.scales)
        print("accuracy target (miniai's errors <= torch's, cosines >= torch's, at every shape and scale):", 'met' if acc else 'NOT met')
        ok &= acc
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
