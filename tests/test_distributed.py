"""`fit`, `get_dls` and `miniai-mnist` across real processes: torchrun with 2 CPU processes on gloo."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']

def run(cmd, timeout=120, **kw):
    "Run `cmd`, returning (exit code, stdout + stderr, seconds)"
    t0 = time.perf_counter()
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    return p.returncode, p.stdout + p.stderr, time.perf_counter() - t0

def worker(mode, out, procs=2, extra=()):
    code, log, _ = run((TORCHRUN if procs == 2 else [sys.executable]) + [str(HERE/'ddp_worker.py'), mode, str(out), *extra])
    assert code == 0, log
    return log

def test_shards_disjoint_complete_and_even(tmp_path):
    worker('shards', tmp_path)
    r0, r1 = (json.loads((tmp_path/f'shards{r}.json').read_text()) for r in (0, 1))
    n = 103
    for route in ('fast', 'torch'): # 103 samples over 2 processes: 52 each, one sample twice (padding, as DistributedSampler)
        assert r0[route]['n_batches'] == r1[route]['n_batches'] == 11
        for e in range(2):
            a, b = r0[route]['train'][e], r1[route]['train'][e]
            assert len(a) == len(b) == 52
            assert sorted(set(a) | set(b)) == list(range(n)) and len(set(a) & set(b)) == 1
        assert r0[route]['train'][0] != r0[route]['train'][1], 'a new order each epoch'
        assert sorted(r0[route]['valid'] + r1[route]['valid']) == list(range(n)), 'each validation sample exactly once'
    # rank r takes positions r, r+2, ... of one permutation: interleaving the shards gives a permutation
    a, b = r0['fast_drop']['train'][0], r1['fast_drop']['train'][0]
    assert len(a) == len(b) == 50 and r0['fast_drop']['n_batches'] == r1['fast_drop']['n_batches'] == 10
    assert len(set(a) | set(b)) == 100

@pytest.mark.parametrize('mode', ['metrics', 'head', 'accum'])
def test_metrics_global_and_equal_to_one_process(tmp_path, mode):
    "The same global numbers on every process, and the model of one process at twice the batch; `head`: a loss with weights; `accum`: and `GradAccum`"
    log = worker(mode, tmp_path)
    one = tmp_path/'one'; one.mkdir()
    worker(mode, one, procs=1)
    r0, r1, single = (json.loads(p.read_text()) for p in (tmp_path/'metrics0.json', tmp_path/'metrics1.json', one/'metrics0.json'))
    for k in ('train_loss', 'valid_loss', 'valid_acc'): # the same global numbers on every process
        assert [e[k] for e in r0['history']] == [e[k] for e in r1['history']]
        # 2 processes at bs 10 train like one at bs 20
        torch.testing.assert_close(torch.tensor([e[k] for e in r0['history']]), torch.tensor([e[k] for e in single['history']]), rtol=1e-5, atol=1e-6)
    for a, b in zip(r0['weights'], single['weights']): torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=0, atol=1e-5)
    assert r0['weights'] == r1['weights'], 'DDP keeps the processes in step'
    # validation counts each sample once: the reported numbers are those of the whole validation set
    torch.testing.assert_close(torch.tensor(r0['history'][-1]['valid_loss']), torch.tensor(r0['full_valid'][0]), rtol=1e-5, atol=1e-6)
    assert r0['history'][-1]['valid_acc'] == pytest.approx(r0['full_valid'][1], abs=1e-6) # one sample is 1/101
    assert log.count('epoch 0: train loss') == 1, 'only rank 0 prints'
    if mode == 'accum': # 3 micro-batches a step, and each wrapper (model, loss) averages its one bucket once a step: DDP's no_sync
        assert r0['steps'] == r1['steps'] == 90 and r0['syncs'] == r1['syncs'] == {'model': 90, 'loss_func': 90}

def test_failure_on_one_rank_ends_the_job(tmp_path):
    code, log, secs = run(TORCHRUN + [str(HERE/'ddp_worker.py'), 'fail', str(tmp_path)], timeout=120)
    assert code != 0
    assert 'NonFiniteLossError' in log and 'on rank 1 of 2' in log, log[-3000:]
    assert secs < 60, f'took {secs:.0f} s to end'

@pytest.mark.parametrize('bad', [['--epochs', '0'], ['--bs', '0']])
def test_bad_flags_fail_on_every_rank(tmp_path, bad, mnist_dir):
    code, log, secs = run(TORCHRUN + ['--no-python', 'miniai-mnist', '--out', str(tmp_path), *bad], timeout=120)
    assert code != 0 and secs < 60, log[-3000:]

def test_miniai_mnist_two_processes_train_like_one(tmp_path, mnist_dir):
    "`torchrun ... miniai-mnist --bs 25` trains the model `miniai-mnist --bs 50` trains, with the same seed"
    c1, log1, _ = run(['miniai-mnist', '--epochs', '1', '--bs', '50', '--seed', '0', '--out', str(tmp_path/'one')], timeout=300)
    c2, log2, _ = run(TORCHRUN + ['--no-python', 'miniai-mnist', '--epochs', '1', '--bs', '25', '--seed', '0', '--out', str(tmp_path/'two')], timeout=300)
    assert c1 == 0 and c2 == 0, log1 + log2
    acc = [l for l in log1.splitlines() if l.startswith('validation accuracy')]
    assert len(acc) == 1 and [l for l in log2.splitlines() if l.startswith('validation accuracy')] == acc, 'only rank 0 prints, the same accuracy'
    a, b = (torch.load(tmp_path/d/'mnist_mlp.pt', weights_only=True) for d in ('one', 'two'))
    assert a.keys() == b.keys()
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4)
    assert sorted(p.name for p in (tmp_path/'two').iterdir()) == ['mnist_loss.png', 'mnist_mlp.pt'], 'only rank 0 writes, nothing half-written'

# ---------- checkpoints across processes ----------
@pytest.mark.parametrize('route', ['fast', 'torch'])
@pytest.mark.parametrize('at', [(0, 4), (1, 17), (2, 29)])
def test_two_processes_resume_bit_for_bit(tmp_path, route, at):
    "Both processes crash after a batch; the same command resumes from the checkpoint to the uninterrupted run's weights"
    ref, run_ = tmp_path/'ref', tmp_path/'run'; ref.mkdir(); run_.mkdir()
    worker('ckpt', ref, extra=[route])
    code, log, _ = run(TORCHRUN + [str(HERE/'ddp_worker.py'), 'ckpt', str(run_), route, *map(str, at)])
    assert code != 0 and 'crashed after batch' in log, log[-3000:]
    assert not (run_/'ckpt0.json').exists()
    worker('ckpt', run_, extra=[route])
    for r in (0, 1):
        a, b = (json.loads((d/f'ckpt{r}.json').read_text()) for d in (ref, run_))
        assert a == b, f'rank {r}: history, batch losses, rates or weights differ'

def test_checkpoint_of_another_process_count_loads_nothing(tmp_path):
    "A finished 1-process run's checkpoint, started again by 2 processes: each process names the difference, and none trains"
    worker('ckpt', tmp_path, procs=1, extra=['fast'])
    (tmp_path/'ckpt0.json').unlink()
    ck = (tmp_path/'ck.pt').read_bytes()
    code, log, secs = run(TORCHRUN + [str(HERE/'ddp_worker.py'), 'ckpt', str(tmp_path), 'fast'])
    assert code != 0 and secs < 60, log[-3000:]
    assert log.count('does not fit this run: it was written by 1 processes, and this run has 2') == 2, log[-3000:]
    assert not list(tmp_path.glob('ckpt*.json')) and (tmp_path/'ck.pt').read_bytes() == ck, 'nothing trained, the checkpoint kept'

def workers(pid):
    "The processes that `pid` started, by their RANK"
    found = {}
    for p in Path('/proc').iterdir():
        try:
            if p.name.isdigit() and f'PPid:\t{pid}\n' in (p/'status').read_text():
                env = dict(kv.split('=', 1) for kv in (p/'environ').read_text().split('\0') if '=' in kv)
                if 'RANK' in env: found[int(env['RANK'])] = int(p.name)
        except OSError: pass
    return found

def test_torchrun_restarts_a_killed_worker_and_resumes(tmp_path, mnist_dir):
    "SIGKILL rank 1 mid-epoch: torchrun --max-restarts restarts the group, which resumes and ends with the uninterrupted weights"
    cmd = ['--no-python', 'miniai-mnist', '--epochs', '2', '--bs', '25', '--seed', '0', '--sched', 'onecycle']
    c, log, _ = run(TORCHRUN + cmd + ['--out', str(tmp_path/'ref')], timeout=300)
    assert c == 0, log[-3000:]
    for k, delay in enumerate((0.0, 0.3)):
        out, ck = tmp_path/f'run{k}', tmp_path/f'run{k}'/'ck.pt'
        p = subprocess.Popen(TORCHRUN[:3] + ['--max-restarts', '1'] + TORCHRUN[3:] + cmd + ['--out', str(out), '--checkpoint', str(ck), '--every', '150'],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        t0 = time.time()
        while not ck.exists():
            assert p.poll() is None and time.time() - t0 < 120, p.communicate()[1][-3000:]
            time.sleep(0.01)
        time.sleep(delay)
        killed = workers(p.pid)[1]
        os.kill(killed, signal.SIGKILL)
        try: so, se = p.communicate(timeout=300)
        except subprocess.TimeoutExpired: p.kill(); raise AssertionError('the restarted group hung')
        # torchrun names the first process it found dead: the killed rank 1, or rank 0 when its collective failed on the dead peer first
        failed = re.findall(r'failed \(exitcode: (-?\d+)\) local_rank: (\d) \(pid: (\d+)\)', se)
        assert p.returncode == 0 and len(failed) == 1, se[-3000:]
        assert failed[0] == ('-9', '1', str(killed)) or failed[0][:2] == ('1', '0'), se[-3000:]
        a, b = (torch.load(d/'mnist_mlp.pt', weights_only=True) for d in (tmp_path/'ref', out))
        assert all(torch.equal(a[n], b[n]) for n in a), f'run {k}: weights differ from the uninterrupted run'
