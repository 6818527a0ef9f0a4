"""`miniai-gpt` under torchrun, 2 CPU processes on gloo: each process's share of the windows, the weights of one process at
twice the batch, validation split over the processes, and a killed or restarted group that resumes bit for bit."""
import os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
import miniai.gpt
from miniai.gpt import SeqChunks, Windows
from test_distributed import workers
from test_gpt import same_state, text

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
TINY = ['--block-size', '16', '--n-layer', '2', '--n-embd', '32', '--n-head', '2', '--warmup', '2', '--lr', '3e-3']

def run(cmd, timeout=300):
    "Run `cmd`: (exit code, stdout, stderr, seconds)"
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0

# ---------- each process's share, without processes: `world` says which ----------
def as_rank(monkeypatch, r, W): monkeypatch.setattr(miniai.gpt, 'world', lambda: (r, W))

def test_windows_deal_each_process_its_share_of_one_draw(monkeypatch):
    "Rank r of W at bs b takes windows r*b to (r+1)*b of each batch that one process at bs W*b draws, from the same seed"
    data = torch.arange(1000)
    one = list(Windows(data, 12, 16, 5, generator=torch.Generator().manual_seed(3)))
    shares = []
    for r in range(3):
        as_rank(monkeypatch, r, 3)
        share = lambda: Windows(data, 4, 16, 5, generator=torch.Generator().manual_seed(3))
        shares.append(list(share()))
        assert len(share()) == 5 and [torch.equal(a[0], b[0]) for a, b in zip(shares[-1][2:], share().batches(skip=2))] == [True] * 3
    for i, (x, y) in enumerate(one):
        assert torch.equal(torch.cat([s[i][0] for s in shares]), x) and torch.equal(torch.cat([s[i][1] for s in shares]), y)

@pytest.mark.parametrize('n,bs,block_size,W', [(111_540, 64, 16, 2), (100, 3, 7, 2), (100, 3, 7, 3), (9, 2, 8, 2), (2, 1, 64, 2)])
def test_chunks_split_the_windows_over_the_processes(monkeypatch, n, bs, block_size, W):
    "The processes' batches, in rank order, are every window once: each token but the first is a target once over all of them"
    data = torch.randint(65, (n,))
    ys = []
    for r in range(W):
        as_rank(monkeypatch, r, W)
        ch = SeqChunks(data, bs, block_size)
        batches = list(ch)
        assert len(batches) == len(ch) and all(len(x) <= bs and x.shape[1] <= block_size for x, _ in batches)
        ys += [y.flatten() for _, y in batches]
    assert torch.equal(torch.cat(ys), data[1:])

# ---------- miniai-gpt under torchrun ----------
def gpt(out, bs, *flags, procs=2, launch=()):
    "`miniai-gpt` on a tiny model, with a checkpoint every 20 steps: long enough to be killed mid-way"
    return (TORCHRUN[:3] + list(launch) + TORCHRUN[3:] + ['--no-python'] if procs == 2 else []) + ['miniai-gpt', '--steps', '160', '--eval-every', '80',
            '--sample-chars', '20', *TINY, '--bs', str(bs), '--out', str(out), '--checkpoint', str(Path(out)/'ck.pt'), '--every', '20', *flags]

@pytest.fixture(scope='module')
def runs(tmp_path_factory, text):
    "Uninterrupted runs: 1 process at bs 32; 2 at bs 16; 2 at bs 16 in 2 micro-batches each. Each: its folder and stdout"
    res = {}
    for name, cmd in (('one', lambda o: gpt(o, 32, procs=1)), ('two', lambda o: gpt(o, 16)), ('accum', lambda o: gpt(o, 16, '--accum', '2'))):
        out = tmp_path_factory.mktemp(name)
        code, so, se, _ = run(cmd(out))
        assert code == 0, se[-3000:]
        res[name] = out, so
    return res

def load(out, f='gpt.pt'): return torch.load(Path(out)/f, weights_only=True)

@pytest.mark.parametrize('two', ['two', 'accum'])
def test_two_processes_at_bs_16_train_like_one_at_32(runs, two):
    "The same weights to float32 tolerance (DDP averages the gradients of two means of 16 windows), the same whole-split validation loss; rank 0 alone prints and writes"
    (d1, o1), (d2, o2) = runs['one'], runs[two]
    a, b = load(d1), load(d2)
    assert a.keys() == b.keys() and a['_extra_state'] == b['_extra_state']
    for k in a:
        if torch.is_tensor(a[k]): torch.testing.assert_close(b[k], a[k], msg=k)
    h1, h2 = load(d1, 'ck.pt')['epochs'], load(d2, 'ck.pt')['epochs'] # one process's valid loss is the whole split's
    for k in ('train_loss', 'valid_loss', 'valid_acc'):
        torch.testing.assert_close(torch.tensor([e[k] for e in h2]), torch.tensor([e[k] for e in h1]), msg=k)
    for line in ('step 80:', 'step 160:', 'validation loss:'): assert o2.count(line) == 1, o2
    assert o1.splitlines()[-2] == o2.splitlines()[-2], 'the printed validation loss'
    assert sorted(p.name for p in d2.iterdir()) == ['ck.pt', 'gpt.pt'], 'one process writes, nothing half-written'

def start(cmd): return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})

def wait_for(path, p, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert p.poll() is None and time.time() - t0 < timeout, p.communicate()[1][-3000:]
        time.sleep(0.01)

def test_sigkill_of_the_group_then_same_command_resumes_bit_for_bit(tmp_path, runs):
    "torchrun and both processes get SIGKILL at a random moment after the first checkpoint; the same command ends as the uninterrupted run"
    ref, ref_out = runs['two']
    for delay in (1.5, 0.5, 0.): # a run that ended before the kill is run again, killed sooner
        out = tmp_path/f'run{delay}'
        p = start(gpt(out, 16))
        wait_for(out/'ck.pt', p)
        time.sleep(random.uniform(0, delay))
        for pid in [*workers(p.pid).values(), p.pid]: os.kill(pid, signal.SIGKILL) # a power cut: the workers first, or they outlive torchrun
        p.communicate()
        if not (out/'gpt.pt').exists(): break
    killed_at = load(out, 'ck.pt')
    assert not (out/'gpt.pt').exists(), 'killed before the end'
    code, again, err, _ = run(gpt(out, 16))
    assert code == 0, err[-3000:]
    at = f"killed after step {killed_at['epoch'] * 80 + killed_at['batch']}"
    assert all(torch.equal(a, b) for a, b in zip(load(out, 'ck.pt')['batch_losses'], load(ref, 'ck.pt')['batch_losses'])), f'{at}: losses differ'
    assert same_state(load(out), load(ref)), f'{at}: weights differ'
    last = lambda s: s[s.rindex('step 160:'):s.rindex('saved ')] # the last evaluation, its sample and the validation loss
    assert last(again) == last(ref_out), at
    # sampling under torchrun: rank 0 alone prints
    code, s, err, _ = run(TORCHRUN + ['--no-python', 'miniai-gpt', '--sample', 'ROMEO:', '--chars', '30', '--checkpoint', str(out/'ck.pt')])
    assert code == 0 and s.count('ROMEO:') == 1, s + err[-3000:]

def test_max_restarts_restarts_a_killed_worker_and_resumes(tmp_path, runs):
    "SIGKILL rank 1 mid-run: torchrun --max-restarts restarts the group, which resumes and ends with the uninterrupted weights"
    out = tmp_path/'run'
    p = start(gpt(out, 16, launch=['--max-restarts', '1']))
    wait_for(out/'ck.pt', p)
    time.sleep(0.3)
    os.kill(workers(p.pid)[1], signal.SIGKILL)
    try: so, se = p.communicate(timeout=300)
    except subprocess.TimeoutExpired: p.kill(); raise AssertionError('the restarted group hung')
    assert p.returncode == 0 and len([l for l in se.splitlines() if 'failed (exitcode: ' in l]) == 1, se[-3000:]
    assert same_state(load(out), load(runs['two'][0]))

def test_usage_errors_under_torchrun(tmp_path, text):
    "Every process stops on the same check before joining the group; rank 0 alone prints; the job fails fast"
    code, out, err, secs = run(TORCHRUN + ['--no-python', 'miniai-gpt', '--out', str(tmp_path), '--block', '0'], timeout=120)
    assert code != 0 and secs < 60, err[-3000:]
    lines = [l for l in err.splitlines() if l.startswith('miniai-gpt: error:')]
    assert lines == ['miniai-gpt: error: argument --block-size: must be at least 1, got 0'], err[-3000:]
    assert 'step' not in out and not list(tmp_path.iterdir())
