"""Run the 2-process `fit` of tests/ddp_worker.py many times, with busy processes beside it, and count the runs that do
not exit 0. A clean exit must hold every time: one crash in twenty runs is a red CI every few landings. Mode `gpt` runs
`miniai-gpt` under torchrun instead (a tiny model, 20 steps, checkpoints, samples), and also checks rank 0's output.

    python tools/stress_ddp.py --runs 40 --busy 2 --modes head metrics
    python tools/stress_ddp.py --runs 50 --busy 2 --modes gpt
    python tools/stress_ddp.py --runs 20 --busy 2 --modes accum   # GradAccum's one all-reduce a step under DDP

Each failing run's log is kept in --logs; the last line is `N passed, N failed`. Exit code 1 if any run failed."""
import argparse, os, re, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE.parent/'tests'/'ddp_worker.py'
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
GPT = ['--no-python', 'miniai-gpt', '--steps', '20', '--eval-every', '10', '--sample-chars', '20', '--bs', '8', '--block-size', '16',
       '--n-layer', '1', '--n-embd', '32', '--n-head', '2', '--every', '5'] # and --out, --checkpoint

def busy(n:int)->list:
    "`n` processes that spin on a core each, as a busy shared machine would"
    return [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(n)]

# what rank 0 alone prints: each evaluation, then its sample (the prompt, a new line, and 20 characters), the loss, the file
GPT_OUT = re.compile(r"step 10: train loss [^\n]*\n.{21}\nstep 20: train loss [^\n]*\n.{21}\nvalidation loss: [0-9.]+\nsaved [^\n]*gpt\.pt\n", re.S)

def gpt_output_error(out:str, stdout:str)->str|None:
    "What is wrong with what a `gpt` run printed and wrote; None if nothing"
    if not GPT_OUT.fullmatch(stdout): return "expected rank 0's output alone: 2 evaluations, each with a sample of 20 characters, the loss, and the file saved"
    if (names := sorted(p.name for p in Path(out).iterdir())) != ['ck.pt', 'gpt.pt']: return f"expected ck.pt and gpt.pt in --out, got {names}"

def one_run(mode:str, timeout:float)->tuple:
    "One torchrun of the worker, or of miniai-gpt: (exit code, log); a hang counts as a failure, and so does wrong output of miniai-gpt"
    with tempfile.TemporaryDirectory() as out:
        cmd = TORCHRUN + (GPT + ['--out', out, '--checkpoint', f'{out}/ck.pt'] if mode == 'gpt' else [str(WORKER), mode, out])
        env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONFAULTHANDLER': '1'}
        try: p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as e: return 'timeout', f"hung for {timeout} s\n{e.stdout or ''}{e.stderr or ''}"
        if p.returncode == 0 and mode == 'gpt' and (why := gpt_output_error(out, p.stdout)): return 'output', f"{why}\n{p.stdout}{p.stderr}"
        return p.returncode, p.stdout + p.stderr

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=40, help='runs of each mode')
    ap.add_argument('--busy', type=int, default=2, help='busy processes beside the runs')
    ap.add_argument('--modes', nargs='+', default=['head', 'metrics'], help="worker modes: 'head' has two DDP wrappers; 'accum' adds GradAccum(3); 'gpt' runs miniai-gpt")
    ap.add_argument('--timeout', type=float, default=180, help='seconds before a run counts as hung')
    ap.add_argument('--logs', default=None, help='folder for the logs of failing runs (default: a temporary folder)')
    a = ap.parse_args()
    logs = Path(a.logs or tempfile.mkdtemp(prefix='stress_ddp_')); logs.mkdir(parents=True, exist_ok=True)
    spin, ok, bad, t0 = busy(a.busy), 0, 0, time.perf_counter()
    try:
        for i in range(a.runs):
            for mode in a.modes:
                code, log = one_run(mode, a.timeout)
                if code == 0: ok += 1; continue
                bad += 1
                (logs/f'{mode}-{i}.log').write_text(log)
                print(f"run {i} {mode}: exit {code}; log in {logs/f'{mode}-{i}.log'}", flush=True)
    finally:
        for p in spin: p.kill()
    print(f"{a.runs} x {a.modes} beside {a.busy} busy processes in {time.perf_counter() - t0:.0f} s")
    print(f"stress: {ok} passed, {bad} failed")
    sys.exit(1 if bad else 0)

if __name__ == '__main__': main()
