#!/usr/bin/env python
"""The GPT of notebook 9 on Tiny Shakespeare: its training step against main's, the attention routes, the 10-minute
command's validation loss; and what `fit` costs against a bare loop and the loss of nanoGPT's baby configuration.

1. `attention`: one attention layer of each configuration, forward and backward, by each route of `attention` (SDPA and
   the plain one), in float32 and bfloat16, interleaved: the table behind `attention_route`'s choice.
2. `step`: this worktree's GPT against main's (the `miniai/gpt.py` of commit `--before`, loaded by `_before.py`), same
   weights, same windows, same bare training loop (autocast, backward, clip, AdamW, zero_grad), taking turns: tokens per
   second of each, the ratio of each round and its quartiles; and the model FLOPs utilisation (MFU) of this worktree's
   step: FLOPs per token as nanoGPT's `estimate_mfu` counts them (https://github.com/karpathy/nanoGPT/blob/master/model.py),
   6 N + 12 n_layer n_embd T, with N the parameters but the position embedding (the token embedding counts once, as
   the tied head), times tokens per second, over the rate of a 2048^3 bfloat16 matrix product measured in the same run.
3. `quality`: the 10-minute command (`QUALITY`) run as a user runs it, timed: steps, seconds, the final validation loss.
   `variants`: that command with each of `VARIANTS`' changes, one after the other (about 10 minutes each): what was
   tried to bring the loss under 1.50 within 600 s, with the validation loss after 1000, 1500 and 2000 steps.

4. `speed`. Two routes train their own copy of the same GPT (same seed) on their own `Windows` (same seed), with AdamW,
   warmup and cosine decay, clipping at 1.0 and, in bfloat16, autocast, taking turns `--steps` steps at a time in a
   rotating order, so that load on a shared machine hits both alike:
   - `bare`: a hand-written loop: forward under autocast, the loss, `loss.item()`, backward, clip, step, schedule,
     zero_grad; then the same small validation pass as `fit`'s (eval mode, no gradients);
   - `fit`: `fit` with its default callbacks and `Schedule`, `GradClip(1.0)` and `MixedPrecision`.
   Both end on the same weights, bit for bit: the script checks it. Reported: tokens per second of each (median over
   rounds) and the median of each round's ratio fit/bare, with its quartiles; and bfloat16's speed over float32's.
5. `baby`, `best`. `train_gpt` (what `miniai-gpt` runs) trains nanoGPT's baby configuration for 2000 steps, and the notebook's
   best configuration for `--best-steps` steps; the validation loss is the mean over the whole validation split.
   Reported with the seconds of training (evaluations included) and the sample printed at the end.

    python bench/gpt.py --quick          # attention and step, fewer rounds: about 2 minutes on a quiet 2-core CPU
    python bench/gpt.py                  # attention, step and quality: about 15 minutes
    python bench/gpt.py --only quality   # or: attention, step; and the older parts: speed (fit against bare), baby, best
    python bench/gpt.py --only variants  # what was tried for the 10-minute target: about 70 minutes
"""
import argparse, contextlib, io, math, os, re, shlex, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import torch
from _before import module_before
from miniai.gpt import (GPT, CharVocab, SeqChunks, Windows, attention, attention_route, get_shakespeare, gpt_optimizer, split_data, train_gpt,
                        warmup_cosine)
from miniai.training import fit
from miniai.callbacks import GradClip, MixedPrecision, Schedule

CONFIGS = {'baby': dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bs=12), # nanoGPT's config/train_shakespeare_char.py, its CPU settings
           'best': dict(n_layer=6, n_head=4, n_embd=256, block_size=128, bs=32)} # the notebook's: what trains best in 10 minutes here

BEFORE = '6a4b93d' # main before the attention routes
QUALITY = ['miniai-gpt', '--steps', '2000', '--eval-every', '500', '--bs', '32', '--block-size', '128', '--n-layer', '6',
           '--n-embd', '256', '--bf16', 'True'] # the 6 x 256 bfloat16 run; on the 2-core machine: 498-637 s, valid loss 1.51

def quartiles(xs):
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[1], q[0], q[2]

def interleaved(fns:dict, rounds:int)->dict:
    "Each of `fns` called once per round, in an order that rotates each round; one warm-up round first. The values of each"
    for f in fns.values(): f()
    out, keys = {k: [] for k in fns}, list(fns)
    for i in range(rounds):
        for k in keys[i % len(keys):] + keys[:i % len(keys)]: out[k].append(fns[k]())
    return out

def attention_times(cfg:dict, rounds:int)->dict:
    "ms of one attention layer of `cfg` (forward and backward) by each route and dtype"
    B, T, C, nh = cfg['bs'], cfg['block_size'], cfg['n_embd'], cfg['n_head']
    res = {}
    for dt in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(B, nh, T, C // nh, dtype=dt, requires_grad=True) for _ in range(3))
        def run(route, n=3):
            t0 = time.perf_counter()
            for _ in range(n): attention(q, k, v, route=route).sum().backward()
            return (time.perf_counter() - t0) / n * 1e3
        for route, ts in interleaved({r: (lambda r=r: run(r)) for r in ('sdpa', 'plain')}, rounds).items():
            res[dt, route] = statistics.median(ts)
    return res

def matmul_rate(n:int=2048, reps:int=5)->float:
    "GFLOPS of an n x n x n bfloat16 matrix product, the best of `reps` (a shared machine only ever slows it)"
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)
    return 2 * n**3 / min(ts) / 1e9

def flops_per_token(m:GPT)->float:
    "nanoGPT's estimate_mfu: 6 N + 12 n_layer n_embd T, N the parameters but the position embedding"
    c = m.config
    N = sum(p.numel() for p in m.parameters()) - m.wpe.weight.numel()
    return 6 * N + 12 * c['n_layer'] * c['n_embd'] * c['block_size']

class Stepper:
    "One GPT class's copy of the model (weights `sd`), optimizer and windows; each call trains `steps` steps, returns tokens/s"
    def __init__(self, mod, cfg, sd, train, steps, bf16):
        self.model = mod.GPT(65, cfg['block_size'], cfg['n_layer'], cfg['n_head'], cfg['n_embd'])
        self.model.load_state_dict(sd)
        self.opt = mod.gpt_optimizer(self.model, 1e-3)
        self.dl = Windows(train, cfg['bs'], cfg['block_size'], steps, generator=torch.Generator().manual_seed(0))
        self.bf16, self.tokens = bf16, steps * cfg['bs'] * cfg['block_size']
    def __call__(self):
        m, opt = self.model, self.opt
        t0 = time.perf_counter()
        for xb, yb in self.dl:
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=self.bf16): loss = m.loss(m(xb), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step(); opt.zero_grad()
        return self.tokens / (time.perf_counter() - t0)

def step_speed(cfg_name, bf16, steps, rounds, train, before):
    cfg = CONFIGS[cfg_name]
    torch.manual_seed(0)
    sd = GPT(65, cfg['block_size'], cfg['n_layer'], cfg['n_head'], cfg['n_embd']).state_dict()
    import miniai.gpt as now
    s = {'main': Stepper(before, cfg, sd, train, steps, bf16), 'now': Stepper(now, cfg, sd, train, steps, bf16)}
    tps = interleaved(s, rounds)
    ratio = quartiles([a / b for a, b in zip(tps['now'], tps['main'])])
    return dict(main=statistics.median(tps['main']), now=statistics.median(tps['now']), ratio=ratio, fpt=flops_per_token(s['now'].model))

VARIANTS = {'as it is': [], 'lr 2e-3': ['--lr', '2e-3'], 'weight decay 1.0': ['--weight-decay', '1.0'],
            'context 256, batch 16': ['--block-size', '256', '--bs', '16'], 'dropout 0.1': ['--dropout', '0.1'],
            'min_lr 3e-4': ['--min-lr', '3e-4'], '2500 steps': ['--steps', '2500']}

def quality(cmd:list)->dict:
    "Run `cmd` in a fresh folder, timed: its steps, seconds, the last evaluation's line and the final validation loss"
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
        secs = time.perf_counter() - t0
    if r.returncode: sys.exit(f"{shlex.join(cmd)} failed with exit code {r.returncode}:\n{r.stderr[-2000:]}")
    steps = re.findall(r'^step (\d+): train loss ([\d.]+), valid loss ([\d.]+)', r.stdout, re.M)
    return dict(secs=secs, steps=int(steps[-1][0]), train=float(steps[-1][1]), valids={int(s): float(v) for s, _, v in steps}, valid=float(re.search(r'validation loss: ([\d.]+)', r.stdout)[1]), out=r.stdout)

class Route:
    "One copy of the model, its optimizer, schedule and loader; each call trains `steps` steps and validates on `valid`"
    def __init__(self, cfg, train, valid, steps, rounds, bf16, use_fit):
        torch.manual_seed(0)
        self.model = GPT(65, cfg['block_size'], cfg['n_layer'], cfg['n_head'], cfg['n_embd'])
        self.opt = gpt_optimizer(self.model, 1e-3)
        self.sched = warmup_cosine(self.opt, steps * rounds, warmup=steps)
        self.dl = Windows(train, cfg['bs'], cfg['block_size'], steps, generator=torch.Generator().manual_seed(0))
        self.valid, self.bf16, self.use_fit, self.tokens = valid, bf16, use_fit, steps * cfg['bs'] * cfg['block_size']
        self.cbs = [Schedule(self.sched), GradClip(1.0), *([MixedPrecision(torch.bfloat16)] if bf16 else [])]

    def bare(self):
        m, opt = self.model, self.opt
        m.train()
        for xb, yb in self.dl:
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=self.bf16): loss = m.loss(m(xb), yb)
            loss.item()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g['params']], 1.0) # in GradClip's order: the same norm, bit for bit
            opt.step(); self.sched.step(); opt.zero_grad()
        m.eval()
        with torch.no_grad():
            for xb, yb in self.valid:
                with torch.autocast('cpu', dtype=torch.bfloat16, enabled=self.bf16): h = m(xb); m.loss(h, yb).item(); m.accuracy(h, yb).item()

    def __call__(self):
        t0 = time.perf_counter()
        if self.use_fit:
            with contextlib.redirect_stdout(io.StringIO()):
                fit(1, self.model, self.model.loss, self.opt, self.dl, self.valid, progress=False, metric=self.model.accuracy, cbs=self.cbs)
        else: self.bare()
        return self.tokens / (time.perf_counter() - t0)

def speed(cfg_name, bf16, steps, rounds, train, valid):
    cfg = CONFIGS[cfg_name]
    routes = {'bare': Route(cfg, train, valid, steps, rounds + 1, bf16, False), 'fit': Route(cfg, train, valid, steps, rounds + 1, bf16, True)}
    for r in routes.values(): r() # warm-up round
    tps = {k: [] for k in routes}
    for i in range(rounds):
        order = list(routes) if i % 2 == 0 else list(routes)[::-1]
        for k in order: tps[k].append(routes[k]())
    a, b = routes['bare'].model.state_dict(), routes['fit'].model.state_dict()
    same = all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))
    ratios = sorted(f / b_ for f, b_ in zip(tps['fit'], tps['bare']))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return dict(bare=statistics.median(tps['bare']), fit=statistics.median(tps['fit']), ratio=q[1], lo=q[0], hi=q[2], same=same)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--only', choices=['attention', 'step', 'quality', 'variants', 'speed', 'baby', 'best'], action='append', help="run only these parts (default: attention, step, quality)")
    p.add_argument('--quick', action='store_true', help="attention and step only, with fewer rounds: about 2 minutes")
    p.add_argument('--before', default=BEFORE, help="the commit whose miniai/gpt.py `step` compares against")
    p.add_argument('--steps', type=int, nargs=2, default=[50, 10], help="steps per route per round of the speed and step tests: baby, best")
    p.add_argument('--rounds', type=int, default=10, help="rounds of the speed and step tests")
    p.add_argument('--best-steps', type=int, default=1600, help="steps of the best configuration")
    p.add_argument('--best-dropout', type=float, default=0., help="dropout of the best configuration (on this CPU dropout makes a step about a third slower)")
    a = p.parse_args()
    parts = a.only or (['attention', 'step'] if a.quick else ['attention', 'step', 'quality'])
    if a.quick: a.rounds, a.steps = min(a.rounds, 6), [min(a.steps[0], 20), min(a.steps[1], 4)]
    text = get_shakespeare(); vocab = CharVocab(text); train, valid = split_data(vocab.encode(text))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, load {os.getloadavg()[0]:.1f}")
    names = {k: f"{k} ({c['n_layer']}x{c['n_embd']}, T {c['block_size']}, bs {c['bs']})" for k, c in CONFIGS.items()}
    if 'attention' in parts:
        print(f"\none attention layer, forward and backward: ms, medians of {a.rounds} interleaved rounds\n")
        print("| config (B, heads, T, d) | dtype | SDPA | plain | SDPA / plain | attention_route |\n|---|---|---|---|---|---|")
        for k, c in CONFIGS.items():
            r = attention_times(c, a.rounds)
            for dt in (torch.float32, torch.bfloat16):
                print(f"| {k} ({c['bs']}, {c['n_head']}, {c['block_size']}, {c['n_embd'] // c['n_head']}) | {str(dt)[6:]} | {r[dt, 'sdpa']:.1f} | {r[dt, 'plain']:.1f} | "
                      f"{r[dt, 'sdpa'] / r[dt, 'plain']:.2f} | {attention_route(torch.zeros(1, dtype=dt))} |", flush=True)
    if 'step' in parts:
        before = module_before(a.before, 'gpt')
        if before is None: sys.exit(f"git cannot show miniai/gpt.py at {a.before}: run from a clone that has it")
        peak = matmul_rate()
        print(f"\nthe training step, this tree's GPT against {a.before}'s: same weights, windows and loop, {a.rounds} interleaved rounds of "
              f"{' and '.join(map(str, a.steps))} steps; MFU over a 2048^3 bfloat16 product's {peak:,.0f} GFLOPS\n")
        print("| config | dtype | main tokens/s | now tokens/s | now / main (quartiles) | FLOPs per token | MFU |\n|---|---|---|---|---|---|---|")
        for (k, c), steps in zip(CONFIGS.items(), a.steps):
            for bf16 in (True, False):
                r = step_speed(k, bf16, steps, a.rounds, train, before)
                print(f"| {names[k]} | {'bfloat16' if bf16 else 'float32'} | {r['main']:,.0f} | {r['now']:,.0f} | {r['ratio'][0]:.2f} "
                      f"({r['ratio'][1]:.2f}-{r['ratio'][2]:.2f}) | {r['fpt'] / 1e6:.1f} M | {r['fpt'] * r['now'] / 1e9 / peak:.0%} |", flush=True)
    if 'quality' in parts:
        print(f"\nthe 10-minute command: {shlex.join(QUALITY)}, load {os.getloadavg()[0]:.1f}", flush=True)
        r = quality(QUALITY)
        print(f"\n| command | steps | seconds | train loss | valid loss (whole split) | load after |\n|---|---|---|---|---|---|\n"
              f"| `{shlex.join(QUALITY)}` | {r['steps']} | {r['secs']:.0f} | {r['train']:.4f} | {r['valid']:.4f} | {os.getloadavg()[0]:.1f} |", flush=True)
    if 'variants' in parts:
        print(f"\nthe 10-minute command with one change each, evaluated every 250 steps: {shlex.join(QUALITY)}\n")
        print("| change | steps | seconds | valid loss at 1000 | 1500 | 2000 | at the end | train loss | load after |\n|---|---|---|---|---|---|---|---|---|")
        for name, flags in VARIANTS.items():
            r = quality(QUALITY + ['--eval-every', '250', *flags])
            print(f"| {name} | {r['steps']} | {r['secs']:.0f} | {r['valids'][1000]:.4f} | {r['valids'][1500]:.4f} | {r['valids'][2000]:.4f} | {r['valid']:.4f} | "
                  f"{r['train']:.4f} | {os.getloadavg()[0]:.1f} |", flush=True)
    if 'speed' in parts:
        print(f"\nfit against a bare loop: tokens per second, {a.rounds} rounds of {' and '.join(map(str, a.steps))} steps per route\n")
        print("| config | dtype | bare tokens/s | fit tokens/s | fit / bare (quartiles) | same weights |")
        print("|---|---|---|---|---|---|")
        res = {}
        for cfg, steps in zip(CONFIGS, a.steps):
            small_valid = SeqChunks(valid[:CONFIGS[cfg]['block_size'] * 4 + 1], 4, CONFIGS[cfg]['block_size'])
            for bf16 in (False, True):
                r = res[cfg, bf16] = speed(cfg, bf16, steps, a.rounds, train, small_valid)
                print(f"| {cfg} | {'bfloat16' if bf16 else 'float32'} | {r['bare']:,.0f} | {r['fit']:,.0f} | {r['ratio']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) | {r['same']} |", flush=True)
        print("\n| config | bfloat16 / float32 tokens per second, bare | fit |\n|---|---|---|")
        for cfg in CONFIGS: print(f"| {cfg} | {res[cfg, True]['bare'] / res[cfg, False]['bare']:.2f} | {res[cfg, True]['fit'] / res[cfg, False]['fit']:.2f} |")
        ok = all(r['ratio'] >= 0.97 and r['same'] for r in res.values())
        print(f"\ntarget (fit >= 0.97x the bare loop's tokens per second, same weights): {'met' if ok else 'NOT met'}", flush=True)
    runs = []
    if 'baby' in parts: runs.append(('baby, 2000 steps', 1.92, dict(steps=2000, eval_every=500), None))
    if 'best' in parts:
        c = CONFIGS['best']
        runs.append((f"best, {a.best_steps} steps", 1.60, dict(steps=a.best_steps, eval_every=a.best_steps // 4, bs=c['bs'], block_size=c['block_size'],
                     n_layer=c['n_layer'], n_head=c['n_head'], n_embd=c['n_embd'], dropout=a.best_dropout, bf16=True), 600))
    for name, target, kw, limit in runs:
        print(f"\n--- {name}: train_gpt({', '.join(f'{k}={v}' for k, v in kw.items())})", flush=True)
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            res = train_gpt(**kw, progress=False, out=out)
            secs = time.perf_counter() - t0
        last = res.history.epochs[-1]
        ok = res[0] <= target and (limit is None or secs <= limit)
        print(f"\n| run | steps | seconds | train loss | valid loss | target |\n|---|---|---|---|---|---|\n"
              f"| {name} | {kw['steps']} | {secs:.0f} | {last['train_loss']:.4f} | {res[0]:.4f} | <= {target}" +
              (f" in {limit} s" if limit else "") + f": {'met' if ok else 'NOT met'} |", flush=True)

if __name__ == '__main__': main()
