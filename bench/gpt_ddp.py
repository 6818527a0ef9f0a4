#!/usr/bin/env python
"""`GradAccum` under DistributedDataParallel, 2 CPU processes on gloo: what does averaging once a step (`no_sync`) save?

`GradAccum(k)` runs k forward and backward passes per step through `fit`'s model, which `DDPCB` has wrapped in DDP. It
turns DDP's gradient all-reduce off for the first k-1 of them, as DDP's `no_sync` does: one all-reduce per step. Averaging
in every backward pass would be right too (the part accumulated before is the same on every process, so averaging it again
changes nothing) but costs k all-reduces. Three routes train their own copy of the same GPT on the same windows, taking
turns `--steps` steps at a time in a rotating order:

- `plain`: one forward and backward pass per step, at the same batch (the cost of the step without accumulation);
- `accum`: `GradAccum(k)`: one all-reduce per step;
- `sync_each`: `GradAccum(k)` averaging in every micro-batch's backward pass: k all-reduces per step.

Reported: the median over rounds of each route's tokens per second, and the largest difference between the weights of
`accum` and `sync_each` and those of `plain` after all rounds.

    python bench/gpt_ddp.py                  # the baby configuration (4 x 128, context 64), 12 windows per process, k = 4
    python bench/gpt_ddp.py --n-embd 256 --n-layer 6 --block-size 128 --bs 16
"""
import argparse, json, os, statistics, subprocess, sys, time
import torch, torch.distributed as dist
from miniai.gpt import GPT, CharVocab, SeqChunks, Windows, get_shakespeare, gpt_optimizer, split_data
from miniai.training import History, TrainCB, fit, world
from miniai.callbacks import GradAccum
from miniai.distributed import init_distributed

class SyncEachAccum(GradAccum):
    "`GradAccum` that leaves DDP's gradient all-reduce on in every micro-batch's backward pass"
    def _sync(self, run, on:bool): super()._sync(run, True)

def worker(a):
    init_distributed()
    vocab = CharVocab(text := get_shakespeare())
    train, valid = split_data(vocab.encode(text))
    valid = SeqChunks(valid[:a.block_size * 8 + 1], 4, a.block_size)
    routes = {}
    for name, cbs in (('plain', []), ('accum', [GradAccum(a.k)]), ('sync_each', [SyncEachAccum(a.k)])):
        torch.manual_seed(0)
        m = GPT(len(vocab), a.block_size, a.n_layer, 4, a.n_embd)
        routes[name] = (m, gpt_optimizer(m, 1e-3), Windows(train, a.bs, a.block_size, a.steps, generator=torch.Generator().manual_seed(0)), cbs, [])
    names = list(routes)
    for r in range(a.rounds + 1): # round 0 warms up
        for name in names[r % 3:] + names[:r % 3]:
            m, opt, dl, cbs, secs = routes[name]
            dist.barrier()
            t0 = time.perf_counter()
            fit(1, m, m.loss, opt, dl, valid, metric=m.accuracy, cbs=cbs, defaults=[TrainCB(), History()])
            dist.barrier()
            if r: secs.append(time.perf_counter() - t0)
    if world()[0] == 0:
        tokens = a.steps * a.bs * world()[1] * a.block_size
        ref = routes['plain'][0].state_dict()
        res = {name: dict(tokens_per_s=tokens / statistics.median(secs), max_diff=max((v - ref[k]).abs().max().item()
               for k, v in m.state_dict().items() if torch.is_tensor(v))) for name, (m, _, _, _, secs) in routes.items()}
        print(json.dumps(res))
    dist.destroy_process_group()

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n-layer', type=int, default=4); ap.add_argument('--n-embd', type=int, default=128)
    ap.add_argument('--block-size', type=int, default=64); ap.add_argument('--bs', type=int, default=12, help='windows per process')
    ap.add_argument('--k', type=int, default=4, help='micro-batches per step')
    ap.add_argument('--steps', type=int, default=10, help='steps per round'); ap.add_argument('--rounds', type=int, default=6)
    ap.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker: return worker(a)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', __file__, '--worker', *sys.argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    if out.returncode: sys.exit(out.stdout + out.stderr)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"2 processes x {a.bs} windows of {a.block_size}, {a.n_layer} x {a.n_embd}, k = {a.k}, median of {a.rounds} rounds of {a.steps} steps")
    print(f"| route | tokens/s | / plain | largest weight difference from plain |\n|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / res['plain']['tokens_per_s']:.2f} | {r['max_diff']:.1e} |")

if __name__ == '__main__': main()
