#!/usr/bin/env python
"""The GPT of notebook 9 on Tiny Shakespeare: what `fit` costs against a bare loop, bfloat16 against float32, and the
validation loss of nanoGPT's baby configuration and of the notebook's best one.

1. Speed. Two routes train their own copy of the same GPT (same seed) on their own `Windows` (same seed), with AdamW,
   warmup and cosine decay, clipping at 1.0 and, in bfloat16, autocast, taking turns `--steps` steps at a time in a
   rotating order, so that load on a shared machine hits both alike:
   - `bare`: a hand-written loop: forward under autocast, the loss, `loss.item()`, backward, clip, step, schedule,
     zero_grad; then the same small validation pass as `fit`'s (eval mode, no gradients);
   - `fit`: `fit` with its default callbacks and `Schedule`, `GradClip(1.0)` and `MixedPrecision`.
   Both end on the same weights, bit for bit: the script checks it. Reported: tokens per second of each (median over
   rounds) and the median of each round's ratio fit/bare, with its quartiles; and bfloat16's speed over float32's.
2. Loss. `train_gpt` (what `miniai-gpt` runs) trains nanoGPT's baby configuration for 2000 steps, and the notebook's
   best configuration for `--best-steps` steps; the validation loss is the mean over the whole validation split.
   Reported with the seconds of training (evaluations included) and the sample printed at the end.

    python bench/gpt.py               # all of it: about 20 minutes on a 2-core CPU
    python bench/gpt.py --only speed  # or: baby, best
"""
import argparse, contextlib, io, statistics, tempfile, time
import torch
from miniai.gpt import (GPT, CharVocab, SeqChunks, Windows, get_shakespeare, gpt_optimizer, split_data, train_gpt,
                        warmup_cosine)
from miniai.training import fit
from miniai.callbacks import GradClip, MixedPrecision, Schedule

CONFIGS = {'baby': dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bs=12), # nanoGPT's config/train_shakespeare_char.py, its CPU settings
           'best': dict(n_layer=6, n_head=4, n_embd=256, block_size=128, bs=32)} # the notebook's: what trains best in 10 minutes here

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
    p.add_argument('--only', choices=['speed', 'baby', 'best'], action='append', help="run only these parts (default: all)")
    p.add_argument('--steps', type=int, nargs=2, default=[50, 10], help="steps per route per round of the speed test: baby, best")
    p.add_argument('--rounds', type=int, default=10, help="rounds of the speed test")
    p.add_argument('--best-steps', type=int, default=1600, help="steps of the best configuration")
    p.add_argument('--best-dropout', type=float, default=0., help="dropout of the best configuration (on this CPU dropout makes a step about a third slower)")
    a = p.parse_args()
    parts = a.only or ['speed', 'baby', 'best']
    text = get_shakespeare(); vocab = CharVocab(text); train, valid = split_data(vocab.encode(text))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
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
