"""`miniai-mnist` as a user runs it: each bad command fails early, in one `error:` line, without a traceback."""
import os, subprocess, sys, time
from pathlib import Path
import pytest

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '--no-python']
NO_NET = 'http://127.0.0.1:9/mnist.pkl.gz' # the discard port: nothing listens, so the download fails at once

# a pickle that would run `touch pwned` when loaded without weights_only (protocol 2: os.system('touch pwned'))
EVIL = b'\x80\x02cposix\nsystem\nq\x00X\x0b\x00\x00\x00touch pwnedq\x01\x85q\x02Rq\x03.'

def run(cmd, timeout=120, cwd=None, **env):
    "Run `cmd`: (exit code, stdout, stderr, seconds)"
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**os.environ, 'OMP_NUM_THREADS': '1', **env})
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0

def error_lines(err): return [l for l in err.splitlines() if 'error:' in l]

USAGE = { # the flags, and what the one error line must say
    'epochs 0': (['--epochs', '0'], 'argument --epochs: must be at least 1, got 0'),
    'bs 0': (['--bs', '0'], 'argument --bs: must be at least 1, got 0'),
    'nh 0': (['--nh', '0', '--epochs', '1'], 'argument --nh: must be at least 1, got 0'),
    'lr -1': (['--lr', '-1', '--epochs', '1'], 'argument --lr: must be a finite number above 0, got -1.0'),
    'lr 0': (['--lr', '0', '--epochs', '1'], 'argument --lr: must be a finite number above 0, got 0.0'),
    'lr nan': (['--lr', 'nan', '--epochs', '1'], 'argument --lr: must be a finite number above 0, got nan'),
    'out in /proc': (['--epochs', '1', '--out', '/proc/nope'], 'argument --out: cannot write to /proc/nope'),
    'out is a file': (['--epochs', '1', '--out', '{file}'], 'argument --out: cannot write to {file}'),
    'epochs abc': (['--epochs', 'abc'], "argument --epochs: invalid int value: 'abc'"),
    'every without checkpoint': (['--every', '10'], 'argument --every: needs --checkpoint and a count of at least 1, got 10 without --checkpoint'),
    'every 0': (['--every', '0', '--checkpoint', '{dir}/ck.pt'], 'argument --every: needs --checkpoint and a count of at least 1, got 0'),
    'sched unknown': (['--sched', 'cosine'], "argument --sched: expected 'onecycle', got 'cosine'"),
    'checkpoint in /proc': (['--checkpoint', '/proc/nope/ck.pt'], 'argument --checkpoint: cannot write to /proc/nope/ck.pt'),
    'progress maybe': (['--progress', 'maybe'], "argument --progress: invalid bool_arg value: 'maybe'"),
}

@pytest.mark.parametrize('case', list(USAGE))
def test_usage_errors_fail_early_in_one_line(tmp_path, case, mnist_dir):
    flags, msg = USAGE[case]
    (tmp_path/'a_file').write_text('not a folder')
    flags = [f.replace('{file}', str(tmp_path/'a_file')).replace('{dir}', str(tmp_path)) for f in flags]
    if '--out' not in flags: flags += ['--out', str(tmp_path/'out')]
    code, out, err, secs = run(['miniai-mnist', *flags])
    assert code == 2, err
    assert 'Traceback' not in out + err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith('miniai-mnist: error: ') and msg.replace('{file}', str(tmp_path/'a_file')) in lines[0], err
    assert 'epoch 0' not in out, 'no training happened'
    assert not list(tmp_path.rglob('*.pt')) and not list(tmp_path.rglob('*.png')), 'nothing was written'
    assert secs < 30, f'took {secs:.0f} s to fail'

def test_missing_data_says_where_and_what_to_do(tmp_path):
    "No file in --data and no network: one line naming the file, the folder, the URL and the reason, and the fix"
    code, out, err, secs = run(['miniai-mnist', '--data', str(tmp_path/'nowhere'), '--out', str(tmp_path)], MINIAI_MNIST_URL=NO_NET)
    assert code == 2 and 'Traceback' not in out + err, err
    [line] = error_lines(err)
    for part in (f"mnist.pkl.gz is not in {tmp_path/'nowhere'}", NO_NET, 'Connection refused', 'set MINIAI_DATA'): assert part in line, line
    assert not (tmp_path/'nowhere').exists(), 'a failed download creates nothing'
    assert secs < 30

def test_missing_data_from_environment(tmp_path):
    "The same when $MINIAI_DATA points at a folder without the file: the message says it came from there"
    code, _, err, _ = run(['miniai-mnist', '--out', str(tmp_path)], MINIAI_DATA=str(tmp_path/'empty'), MINIAI_MNIST_URL=NO_NET)
    [line] = error_lines(err)
    assert code == 2 and '($MINIAI_DATA)' in line and str(tmp_path/'empty') in line, err

def test_nan_during_training_keeps_the_curve(tmp_path, mnist_dir):
    "A learning rate that blows the loss up: one error line with the nan guard's hint, exit 1, the curve so far written"
    code, out, err, _ = run(['miniai-mnist', '--epochs', '1', '--lr', '1e30', '--out', str(tmp_path)], timeout=300)
    assert code == 1 and 'Traceback' not in out + err, err
    [line] = error_lines(err)
    assert 'the training loss became nan at epoch 0' in line and 'lower the learning rate' in line and 'mnist_loss.png' in line
    assert (tmp_path/'mnist_loss.png').stat().st_size > 0 and not (tmp_path/'mnist_mlp.pt').exists()

def test_nan_keeps_the_last_checkpoint(tmp_path, mnist_dir):
    "A run that blows up after its first checkpoints: the error names the last one, which is still there"
    code, out, err, _ = run(['miniai-mnist', '--epochs', '2', '--lr', '1e30', '--out', str(tmp_path/'bad'), '--checkpoint', str(tmp_path/'bad'/'ck.pt'), '--every', '1'], timeout=300)
    assert code == 1 and 'Traceback' not in out + err, err
    [line] = error_lines(err)
    assert f"the last checkpoint is {tmp_path/'bad'/'ck.pt'}" in line and (tmp_path/'bad'/'ck.pt').exists()

def test_checkpoint_of_another_run_is_one_clear_error(tmp_path, mnist_dir):
    "Resuming with another hidden size: exit 1, one line naming the difference, nothing trained"
    code, _, err, _ = run(['miniai-mnist', '--epochs', '1', '--out', str(tmp_path), '--checkpoint', str(tmp_path/'ck.pt')], timeout=300)
    assert code == 0, err
    code, out, err, _ = run(['miniai-mnist', '--epochs', '1', '--nh', '20', '--out', str(tmp_path), '--checkpoint', str(tmp_path/'ck.pt')], timeout=300)
    assert code == 1 and 'Traceback' not in out + err and 'epoch 0' not in out, err
    [line] = error_lines(err)
    assert 'does not fit this run: its model has other shapes: 0.weight (50, 784), here (20, 784)' in line

@pytest.mark.parametrize('kind', ['random bytes', 'truncated', 'code'])
def test_unreadable_checkpoint_is_a_usage_error(tmp_path, kind, mnist_dir):
    "A file at --checkpoint that a safe load cannot read: one line, exit 2, before any work, no code run, the file kept"
    ck = tmp_path/'ck.pt'
    if kind == 'random bytes': ck.write_bytes(os.urandom(4000))
    elif kind == 'truncated': ck.write_bytes(b'PK\x03\x04' + os.urandom(100))
    else: ck.write_bytes(EVIL)
    before = ck.read_bytes()
    code, out, err, _ = run(['miniai-mnist', '--epochs', '1', '--out', str(tmp_path), '--checkpoint', str(ck)], cwd=tmp_path)
    assert code == 2 and 'Traceback' not in out + err and 'epoch 0' not in out, err
    [line] = error_lines(err)
    assert f'argument --checkpoint: {ck} cannot be read as a checkpoint (' in line and 'delete it, or give another path' in line
    assert ck.read_bytes() == before and not (tmp_path/'pwned').exists()

@pytest.mark.parametrize('bad', [['--epochs', '0'], ['--bs', '0'], ['--lr', '-1'], ['--out', '/proc/nope'], ['--epochs', 'abc']])
def test_usage_errors_under_torchrun(tmp_path, bad, mnist_dir):
    "Every process stops on the same check, before joining the group; only rank 0 prints, even when another process gets there first; the job fails fast"
    code, out, err, secs = run(TORCHRUN + ['miniai-mnist', *(['--out', str(tmp_path)] if '--out' not in bad else []), *bad])
    assert code != 0 and secs < 60, err[-3000:]
    assert len([l for l in err.splitlines() if l.startswith('miniai-mnist: error:')]) == 1, err[-3000:]
    assert 'epoch 0' not in out

def test_help_is_unchanged():
    code, out, err, _ = run(['miniai-mnist', '--help'])
    assert code == 0 and out.startswith('usage: miniai-mnist') and not err
    for flag in ('--epochs', '--bs', '--lr', '--nh', '--out', '--seed', '--data', '--progress'): assert flag in out
