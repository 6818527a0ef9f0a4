"""`CSVLogger` and `TensorBoardCB`: the numbers of `History`, `Schedule` and `GradClip`, flushed row by row; a run killed at
any batch (SIGKILL) and resumed from its checkpoint leaves the logs of a run never killed, bit for bit; only rank 0 writes;
bad paths and other runs' logs are refused before the first batch."""
import csv, json, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from torch import nn
from miniai.losses import cross_entropy
from miniai.training import BatchLoader, Callback, Dataset, History, PrintCB, TrainCB, fit, get_dls
from miniai.callbacks import Checkpoint, CheckpointError, CSVLogger, GradClip, Schedule, TensorBoardCB

HERE = Path(__file__).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}

def data(n=600, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    return x, (x[:, :4].argmax(1) + (x[:, 4] > 1)) % 4

def scalars(d):
    "Every (tag, step, value) of the event files in `d`, as TensorBoard's own reader sees them"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(d)); ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}

def rows(path):
    with open(path, newline='') as f: return list(csv.DictReader(f))

class Killed(Exception): pass
class Crash(Callback):
    def __init__(self, at=None): self.at = at
    def after_batch(self, run):
        if (run.epoch, run.iter) == self.at: raise Killed()

def logged(d, crash_at=None, every=5, extra=()):
    "2 epochs of 25 batches with a schedule, clipping, a checkpoint every `every` batches and both loggers in `d`; None if it crashed"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    (x, y), (xv, yv) = data(500), data(101, 2)
    dls = get_dls(Dataset(x, y), Dataset(xv, yv), 20)
    sched, clip = Schedule(torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=2 * len(dls[0]))), GradClip(0.5)
    cbs = [Checkpoint(Path(d)/'ck.pt', every), sched, clip, CSVLogger(Path(d)/'log.csv'), TensorBoardCB(Path(d)/'tb'), Crash(crash_at), *extra]
    try: res = fit(2, model, cross_entropy, opt, *dls, progress=False, cbs=cbs)
    except Killed: return None
    return res, sched, clip

def test_rows_are_the_numbers_of_history_schedule_and_clipping(tmp_path):
    "One row per batch and per validation; pandas-style columns, empty where a value does not apply; TensorBoard has the same numbers"
    res, sched, clip = logged(tmp_path)
    r = rows(tmp_path/'log.csv')
    assert list(r[0]) == ['step', 'epoch', 'batch', 'phase', 'loss', 'lr', 'grad_norm', 'valid_loss', 'valid_acc']
    train, valid = [x for x in r if x['phase'] == 'train'], [x for x in r if x['phase'] == 'valid']
    assert [x['phase'] for x in r] == (['train'] * 25 + ['valid']) * 2
    assert [int(x['step']) for x in train] == list(range(1, 51)) and [int(x['step']) for x in valid] == [25, 50]
    assert [(int(x['epoch']), int(x['batch'])) for x in train] == [(e, b) for e in range(2) for b in range(25)]
    assert [float(x['loss']) for x in train] == res.history.batch_losses # exact: floats are written as repr
    assert [float(x['lr']) for x in train] == sched.lrs and [float(x['grad_norm']) for x in train] == clip.norms
    assert all(x['valid_loss'] == x['valid_acc'] == '' for x in train) and all(x['batch'] == x['lr'] == x['grad_norm'] == '' for x in valid)
    assert [(float(x['loss']), float(x['valid_loss']), float(x['valid_acc'])) for x in valid] == \
           [(e['train_loss'], e['valid_loss'], e['valid_acc']) for e in res.history.epochs]
    tb = scalars(tmp_path/'tb')
    f32 = lambda v: torch.tensor(v, dtype=torch.float32).item() # TensorBoard keeps float32
    assert tb['train/loss'] == [(s, f32(v)) for s, v in enumerate(res.history.batch_losses, 1)]
    assert tb['train/lr'] == [(s, f32(v)) for s, v in enumerate(sched.lrs, 1)] and tb['train/grad_norm'] == [(s, f32(v)) for s, v in enumerate(clip.norms, 1)]
    assert tb['epoch/valid_acc'] == [(25 * (i + 1), f32(e['valid_acc'])) for i, e in enumerate(res.history.epochs)]
    assert sorted(tb) == ['epoch/train_loss', 'epoch/valid_acc', 'epoch/valid_loss', 'train/grad_norm', 'train/loss', 'train/lr']

@pytest.mark.parametrize('crash_at', [(0, 3), (0, 4), (0, 12), (0, 24), (1, 0), (1, 19)])
def test_crash_and_resume_leaves_the_logs_of_a_run_never_crashed(tmp_path, crash_at):
    "Crashed anywhere, (0, 24) the last batch of an epoch, which a checkpoint holds without its validation; run again: the same bytes, the same scalars"
    logged(tmp_path/'ref')
    assert logged(tmp_path/'run', crash_at) is None
    logged(tmp_path/'run')
    assert (tmp_path/'run'/'log.csv').read_bytes() == (tmp_path/'ref'/'log.csv').read_bytes()
    assert scalars(tmp_path/'run'/'tb') == scalars(tmp_path/'ref'/'tb')
    assert len(list((tmp_path/'run'/'tb').glob('*tfevents*'))) == 1

class ReadBack(Callback):
    "Read the CSV from disk after each batch, while fit runs"
    order = 5 # after the loggers
    def __init__(self, path): self.path, self.seen = path, []
    def after_batch(self, run):
        if run.training: self.seen.append(len(self.path.read_text().splitlines()))

def test_each_row_is_on_disk_as_soon_as_written(tmp_path):
    rb = ReadBack(tmp_path/'log.csv')
    logged(tmp_path, extra=[rb])
    assert rb.seen == [1 + b for b in range(1, 26)] + [1 + 26 + b for b in range(1, 26)] # the header, earlier rows, this batch's

def kill_and_rerun(cmd, csv_path, targets, timeout=300):
    "Run `cmd` once per target, sending SIGKILL once the CSV has that many rows; then run it to the end"
    for n in targets:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        t0 = time.time()
        while not (csv_path.exists() and len(csv_path.read_bytes().splitlines()) > n):
            assert p.poll() is None, f"the run ended before row {n}: {p.stderr.read().decode()[-2000:]}"
            assert time.time() - t0 < timeout
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL); p.wait()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert r.returncode == 0, r.stderr

def test_sigkill_at_random_batches_then_the_same_command(tmp_path, mnist_dir):
    "miniai-mnist killed (SIGKILL) before its first checkpoint, and twice after, at random rows: the logs of a run never killed, bit for bit"
    def cmd(d): return ['miniai-mnist', '--epochs', '2', '--bs', '256', '--seed', '0', '--sched', 'onecycle', '--out', str(d),
                        '--checkpoint', str(d/'ck.pt'), '--every', '40', '--log-dir', str(d/'logs')]
    ref = subprocess.run(cmd(tmp_path/'ref'), capture_output=True, text=True, env=ENV, timeout=300)
    assert ref.returncode == 0, ref.stderr
    rng = random.Random(0)
    targets = [rng.randrange(1, 40), rng.randrange(41, 197), rng.randrange(200, 390)] # 196 batches an epoch
    kill_and_rerun(cmd(tmp_path/'run'), tmp_path/'run'/'logs'/'log.csv', targets)
    assert (tmp_path/'run'/'logs'/'log.csv').read_bytes() == (tmp_path/'ref'/'logs'/'log.csv').read_bytes()
    assert len(rows(tmp_path/'ref'/'logs'/'log.csv')) == 2 * 196 + 2
    assert scalars(tmp_path/'run'/'logs') == scalars(tmp_path/'ref'/'logs')
    a, b = (torch.load(d/'mnist_mlp.pt', weights_only=True) for d in (tmp_path/'ref', tmp_path/'run'))
    assert all(torch.equal(a[k], b[k]) for k in a)

def test_only_rank_0_writes_under_torchrun(tmp_path):
    "2 processes: one CSV with rank 0's batch losses and the global epoch numbers, one event file, nothing of rank 1"
    code = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(HERE/'ddp_worker.py'), 'logs', str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=180)
    assert code.returncode == 0, code.stdout + code.stderr
    h0, h1 = (json.loads((tmp_path/f'logs{r}.json').read_text()) for r in (0, 1))
    r = rows(tmp_path/'logs'/'log.csv')
    assert len(r) == 2 * 30 + 2 and [float(x['loss']) for x in r if x['phase'] == 'train'] == h0['batch_losses'] != h1['batch_losses']
    assert [float(x['valid_loss']) for x in r if x['phase'] == 'valid'] == [e['valid_loss'] for e in h0['epochs']]
    assert sorted(p.name.split('.')[0] for p in (tmp_path/'logs').iterdir()) == ['events', 'log', 'log'] # log.csv, log.csv.run, one event file
    assert len(scalars(tmp_path/'logs')['train/loss']) == 60

class Samples(Callback):
    "Keeps a text per validation in `samples`, as miniai.gpt's `Sample` does"
    order = PrintCB.order + 1
    def __init__(self): self.samples = []
    def after_validate(self, run): self.samples.append(f"epoch {run.epoch}\nsecond line")

def test_samples_go_in_as_text(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util
    logged(tmp_path, extra=[Samples()])
    ea = EventAccumulator(str(tmp_path/'tb')); ea.Reload()
    texts = [(e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode()) for e in ea.Tensors('samples/text_summary')]
    assert texts == [(25, '    epoch 0\n    second line'), (50, '    epoch 1\n    second line')]

# ---------- bad input ----------
def tiny(cbs):
    torch.manual_seed(0); model = nn.Sequential(nn.Linear(20, 4)); opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (x, y), (xv, yv) = data(60), data(50, 2)
    return fit(1, model, cross_entropy, opt, BatchLoader(Dataset(x, y), 20), BatchLoader(Dataset(xv, yv), 50), progress=False, cbs=cbs)

class Batches(Callback):
    def __init__(self): self.n = 0
    def before_batch(self, run): self.n += 1

@pytest.mark.parametrize('make', [lambda: CSVLogger('/proc/nope/log.csv'), lambda: TensorBoardCB('/proc/nope')])
def test_a_log_that_cannot_be_written_fails_before_the_first_batch(make):
    b = Batches()
    with pytest.raises(OSError, match=r"^cannot write the log /proc/nope\S*: .*expected a folder this process can create files in$"): tiny([make(), b])
    assert b.n == 0

@pytest.mark.parametrize('which', ['csv', 'tb'])
def test_the_log_of_another_run_is_refused(tmp_path, which):
    "Without a checkpoint, or with another checkpoint, an existing log is refused, and left as it was"
    make = (lambda: CSVLogger(tmp_path/'log.csv')) if which == 'csv' else (lambda: TensorBoardCB(tmp_path))
    tiny([make()])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for cbs in ([make()], [make(), Checkpoint(tmp_path/'ck.pt')]):
        b = Batches()
        with pytest.raises(FileExistsError, match=f"^{tmp_path}\\S* holds the log of another run: give another path, or delete it, to start afresh$"): tiny(cbs + [b])
        assert b.n == 0 and {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != 'ck.pt'} == before

def test_a_checkpoint_whose_log_is_elsewhere_loads_nothing(tmp_path):
    "Resuming with another log folder: the log is missing, or another run's; a CheckpointError before anything is loaded"
    logged(tmp_path/'a')
    logged(tmp_path/'b')
    (tmp_path/'b'/'ck.pt').unlink()
    for other, msg in (('c', 'does not exist'), ('b', "holds another run's log")):
        (tmp_path/other).mkdir(exist_ok=True)
        ck = tmp_path/other/'ck.pt'; ck.write_bytes((tmp_path/'a'/'ck.pt').read_bytes())
        with pytest.raises(CheckpointError, match=f"its log is not {tmp_path/other}/log.csv, which {msg}. Nothing was loaded"): logged(tmp_path/other)

def test_history_is_needed():
    with pytest.raises(ValueError, match='CSVLogger writes the losses History records: keep History among the callbacks'):
        torch.manual_seed(0); model = nn.Linear(20, 4); (x, y) = data(40)
        fit(1, model, cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1), BatchLoader(Dataset(x, y), 20), BatchLoader(Dataset(x, y), 20),
            defaults=[TrainCB()], cbs=[CSVLogger('unused.csv')])

@pytest.mark.parametrize('make,msg', [(lambda: CSVLogger(42), "CSVLogger's path must be a str or a Path, got int: 42"),
                                      (lambda: TensorBoardCB(None), "TensorBoardCB's log_dir must be a str or a Path, got NoneType: None")])
def test_paths_are_checked_when_built(make, msg):
    with pytest.raises(TypeError, match=msg): make()

def test_without_tensorboard_one_line_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None) # as if tensorboard were not installed: importing it fails
    with pytest.raises(ModuleNotFoundError) as e: TensorBoardCB('runs')
    assert str(e.value) == 'TensorBoardCB needs the tensorboard package: pip install "miniai[tensorboard]"'

def test_the_command_refuses_another_run_s_log_in_one_line(tmp_path, mnist_dir):
    (tmp_path/'logs').mkdir(); (tmp_path/'logs'/'log.csv').write_text('step\n1\n')
    r = subprocess.run(['miniai-mnist', '--epochs', '1', '--out', str(tmp_path), '--log-dir', str(tmp_path/'logs')], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 2 and 'Traceback' not in r.stderr and (tmp_path/'logs'/'log.csv').read_text() == 'step\n1\n'
    [line] = [l for l in r.stderr.splitlines() if 'error:' in l]
    assert line == f"miniai-mnist: error: argument --log-dir: {tmp_path/'logs'/'log.csv'} holds the log of another run: give another path, or delete it, to start afresh"

def test_miniai_gpt_logs_its_samples_as_text(tmp_path):
    "miniai-gpt --log-dir: a row per step and per evaluation, and each evaluation's sample as TensorBoard text"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util
    r = subprocess.run(['miniai-gpt', '--steps', '4', '--eval-every', '2', '--n-layer', '1', '--n-head', '2', '--n-embd', '16', '--bs', '4',
                        '--sample-chars', '20', '--out', str(tmp_path), '--log-dir', str(tmp_path/'logs')], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [(x['step'], x['phase']) for x in rows(tmp_path/'logs'/'log.csv')] == [('1', 'train'), ('2', 'train'), ('2', 'valid'), ('3', 'train'), ('4', 'train'), ('4', 'valid')]
    ea = EventAccumulator(str(tmp_path/'logs')); ea.Reload()
    texts = [(e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode()) for e in ea.Tensors('samples/text_summary')]
    assert [s for s, _ in texts] == [2, 4] and all(t.replace('\n    ', '\n') .strip() in r.stdout for _, t in texts), (texts, r.stdout)
