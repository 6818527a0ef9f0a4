"""`fit`'s callbacks: events, cancelling, schedules, clipping, early stopping, mixed precision, lr_find, and checkpoints that
resume a run killed at any batch with the same weights, bit for bit."""
import copy, os, random, signal, subprocess, sys, time, types
from pathlib import Path
import pytest, torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from miniai.losses import cross_entropy
from miniai.training import (EVENTS, BatchLoader, Callback, CancelBatchException, CancelEpochException, CancelFitException,
                             Checkpoint, CheckpointError, Dataset, EarlyStopping, GradClip, MixedPrecision, Schedule, TrainCB,
                             History, evaluate, fit, get_dls, lr_find)
from miniai.callbacks import GradAccum

def data(n=600, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    return x, (x[:, :4].argmax(1) + (x[:, 4] > 1)) % 4

def mlp(dropout=0.):
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 4))

def weights(m): return [p.detach().clone() for p in m.state_dict().values()]
def same(a, b): return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
def no_time(h): return [{k: v for k, v in e.items() if k != 'seconds'} for e in h.epochs]

# ---------- fit without callbacks is today's loop ----------
def test_fit_without_callbacks_is_the_plain_loop(capsys):
    "The loop before callbacks, written out: the same weights bit for bit, with cbs=None, [] or a callback that does nothing"
    (x, y), (xv, yv) = data(), data(101, 2)
    def plain(epochs, bs=20):
        torch.manual_seed(0); model = mlp(); opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
        for epoch in range(epochs):
            model.train()
            idx = torch.randperm(len(x))
            for i in range(0, len(x), bs):
                b = idx[i:i+bs]
                loss = cross_entropy(model(x[b]), y[b]); loss.item(); loss.backward(); opt.step(); opt.zero_grad()
            evaluate(model, cross_entropy, BatchLoader(Dataset(xv, yv), 40))
        return weights(model)
    def with_fit(cbs):
        torch.manual_seed(0); model = mlp(); opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
        fit(3, model, cross_entropy, opt, *get_dls(Dataset(x, y), Dataset(xv, yv), 20), progress=False, cbs=cbs)
        return weights(model)
    ref = plain(3)
    for cbs in (None, [], [Callback()]): assert same(with_fit(cbs), ref)

# ---------- events and cancelling ----------
class Record(Callback):
    def __init__(self): self.seen = []
    def __getattr__(self, e):
        if e not in EVENTS: raise AttributeError(e)
        return lambda run: self.seen.append(e)

def tiny_fit(cbs, epochs=2, n=60, bs=20):
    torch.manual_seed(0); model = mlp(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (x, y), (xv, yv) = data(n), data(50, 2)
    return model, fit(epochs, model, cross_entropy, opt, BatchLoader(Dataset(x, y), bs), BatchLoader(Dataset(xv, yv), 50), progress=False, cbs=cbs)

def test_events_in_order():
    r = Record(); tiny_fit([r], epochs=1)
    train = ['before_batch', 'after_predict', 'after_loss', 'after_backward', 'after_step', 'after_batch']
    valid = ['before_batch', 'after_predict', 'after_loss', 'after_batch']
    assert r.seen == ['before_fit', 'before_epoch', 'before_train', *train * 3, 'after_train',
                      'before_validate', *valid, 'after_validate', 'after_epoch', 'after_fit']

class CountBatches(Callback):
    "Count the batches of each pass, and the dtypes of their predictions"
    def __init__(self): self.n, self.dtypes = {True: 0, False: 0}, {True: set(), False: set()}
    def after_batch(self, run): self.n[run.training] += 1; self.dtypes[run.training].add(run.preds.dtype)

def test_events_fire_in_validation_and_autocast_covers_it():
    "A callback sees every validation batch; under MixedPrecision the validation forward runs in bfloat16 too"
    c = CountBatches(); _, res = tiny_fit([c], epochs=2, n=60, bs=20)
    assert c.n == {True: 6, False: 2} and c.dtypes == {True: {torch.float32}, False: {torch.float32}}
    c = CountBatches(); _, mp = tiny_fit([MixedPrecision(), c], epochs=2)
    assert c.n == {True: 6, False: 2} and c.dtypes == {True: {torch.bfloat16}, False: {torch.bfloat16}}
    assert mp.history.epochs[-1]['valid_loss'] != res.history.epochs[-1]['valid_loss'] # validated in bfloat16, not float32

def test_validation_numbers_are_evaluate_s():
    "The history's validation loss and accuracy, now summed by events, equal `evaluate` on the trained model"
    model, res = tiny_fit([], epochs=1)
    (xv, yv) = data(50, 2)
    assert res == evaluate(model, cross_entropy, BatchLoader(Dataset(xv, yv), 50))

class Boom(Exception): pass
@pytest.mark.parametrize('event', ['before_fit', 'before_batch', 'after_backward', 'after_validate', 'after_epoch'])
def test_after_fit_runs_after_an_exception(event):
    "Whatever ends fit, after_fit runs once, and the exception reaches the caller"
    r = Record()
    with pytest.raises(Boom): tiny_fit([CancelAt(Boom, event, 0, 0), r], epochs=2)
    assert r.seen.count('after_fit') == 1 and r.seen[-1] == 'after_fit'

class Scale2(nn.Module):
    def __init__(self, m): super().__init__(); self.m = m
    def forward(self, x): return 2 * self.m(x)

def test_a_callback_replaces_a_batch_step():
    "A callback that defines `predict` replaces TrainCB's, and the other steps stay: as a model that doubles its output"
    class Doubled(Callback):
        def predict(self, run): run.preds = 2 * run.model(run.xb)
    _, r1 = tiny_fit([Doubled()], epochs=1)
    torch.manual_seed(0); model = Scale2(mlp()); opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (x, y), (xv, yv) = data(60), data(50, 2)
    r2 = fit(1, model, cross_entropy, opt, BatchLoader(Dataset(x, y), 20), BatchLoader(Dataset(xv, yv), 50), progress=False)
    assert r1.history.batch_losses == r2.history.batch_losses and r1 == r2
    assert r1.history.batch_losses != tiny_fit([], epochs=1)[1].history.batch_losses

def test_defaults_can_be_dropped_or_swapped(capsys):
    "defaults=[...] replaces the default callbacks: without PrintCB nothing is printed; without a batch step, a clear error"
    from miniai.training import TrainCB, History, PrintCB, default_cbs
    _, res = tiny_fit([], epochs=1); assert 'epoch 0: train loss' in capsys.readouterr().out
    torch.manual_seed(0); model = mlp(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (x, y), (xv, yv) = data(60), data(50, 2)
    dls = BatchLoader(Dataset(x, y), 20), BatchLoader(Dataset(xv, yv), 50)
    quiet = fit(1, model, cross_entropy, opt, *dls, defaults=[cb for cb in default_cbs(False) if not isinstance(cb, PrintCB)])
    assert capsys.readouterr().out == '' and quiet == res and quiet.history.batch_losses == res.history.batch_losses
    with pytest.raises(TypeError, match="no callback does the batch step 'predict'"): fit(1, model, cross_entropy, opt, *dls, defaults=[History()])

def test_order_decides_who_runs_first():
    seen = []
    class A(Callback):
        order = 5
        def before_fit(self, run): seen.append('A')
    class B(Callback):
        order = -1
        def before_fit(self, run): seen.append('B')
    tiny_fit([A(), B()], epochs=1)
    assert seen == ['B', 'A']

class CancelAt(Callback):
    def __init__(self, exc, event, epoch, it): self.exc, self.event, self.at = exc, event, (epoch, it)
    def __getattr__(self, e):
        if e not in EVENTS: raise AttributeError(e)
        def f(run):
            if e == self.event and (run.epoch, run.iter) == self.at: raise self.exc()
        return f

def test_cancel_batch_skips_its_step():
    model, res = tiny_fit([CancelAt(CancelBatchException, 'after_loss', 0, 1)])
    assert len(res.history.batch_losses) == 5 and len(res.history) == 2
    ref_model, _ = tiny_fit([])
    assert not same(weights(model), weights(ref_model))

def test_cancel_epoch_still_validates():
    r = Record()
    _, res = tiny_fit([CancelAt(CancelEpochException, 'before_batch', 0, 1), r])
    assert len(res.history.batch_losses) == 4 and len(res.history) == 2 # epoch 0 trained one batch, epoch 1 all three
    assert r.seen.count('after_validate') == 2

def test_cancel_fit_returns_what_finished():
    _, res = tiny_fit([CancelAt(CancelFitException, 'after_batch', 1, 0)], epochs=3)
    assert len(res.history) == 1 and not res.interrupted

# ---------- the callbacks ----------
def test_schedule_steps_once_per_optimizer_step():
    torch.manual_seed(0); model = mlp(); opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    (x, y), (xv, yv) = data(), data(50, 2)
    dls = get_dls(Dataset(x, y), Dataset(xv, yv), 20)
    sched = Schedule(torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=2 * len(dls[0])))
    fit(2, model, cross_entropy, opt, *dls, progress=False, cbs=[sched])
    opt2 = torch.optim.SGD(mlp().parameters(), lr=0.1, momentum=0.9)
    s2, lrs, moms = torch.optim.lr_scheduler.OneCycleLR(opt2, 0.2, total_steps=60), [], []
    for _ in range(60): lrs.append(opt2.param_groups[0]['lr']); moms.append(opt2.param_groups[0]['momentum']); opt2.step(); s2.step()
    assert sched.lrs == lrs and sched.moms == moms
    assert sched.lrs[0] == pytest.approx(0.2 / 25) and max(sched.lrs) == pytest.approx(0.2)

def test_grad_clip_bounds_the_step():
    after = []
    class Norm(Callback):
        order = 1
        def after_backward(self, run): after.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in run.model.parameters()])).item())
    clip = GradClip(0.05)
    tiny_fit([clip, Norm()])
    assert max(clip.norms) > 0.05 and max(after) <= 0.05 * (1 + 1e-5)
    assert all(a == pytest.approx(min(b, 0.05), rel=1e-5) for a, b in zip(after, clip.norms))

def test_early_stopping_patience_and_state():
    es = EarlyStopping('valid_loss', patience=1)
    run = types.SimpleNamespace(history=types.SimpleNamespace(epochs=[]))
    stops = []
    for v in [1.0, 0.9, 0.95, 0.89, 0.92, 0.93, 0.5]:
        run.history.epochs.append(dict(valid_loss=v))
        es.after_validate(run)
        try: es.after_epoch(run); stops.append(False)
        except CancelFitException: stops.append(True); break
    assert stops == [False, False, False, False, False, True] and es.best == 0.89
    es2 = EarlyStopping('valid_loss', patience=1); es2.load_state_dict(es.state_dict())
    with pytest.raises(CancelFitException): es2.before_fit(run) # a resumed run that had stopped stays stopped
    acc = EarlyStopping('valid_acc', patience=0)
    assert acc.mode == 'max'
    for e, v in enumerate([0.5, 0.6, 0.6]):
        run.history.epochs.append(dict(valid_acc=v)); acc.after_validate(run)
    assert acc.stopped
    with pytest.raises(ValueError, match='patience must be at least 0'): EarlyStopping(patience=-1)

class StepGrads(TrainCB):
    "The batch steps, keeping the gradient each optimizer step sees"
    def __init__(self): self.grads = []
    def step(self, run): self.grads.append([p.grad.clone() for p in run.model.parameters()]); run.opt.step()

@pytest.mark.parametrize('k,bs', [(1, 20), (2, 20), (3, 20), (7, 20), (4, 30)])
def test_grad_accum_steps_as_the_whole_batch(k, bs):
    "k micro-batches (unequal when bs % k): each step sees the whole batch's gradient and History the whole batch's loss"
    def go(cbs):
        s = StepGrads()
        torch.manual_seed(0); model = mlp(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
        (x, y), (xv, yv) = data(90), data(50, 2)
        res = fit(1, model, cross_entropy, opt, BatchLoader(Dataset(x, y), bs), BatchLoader(Dataset(xv, yv), 50), cbs=cbs, defaults=[s, History()])
        return s.grads, res.history
    (g1, h1), (g2, h2) = go([]), go([GradAccum(k)])
    assert len(g1) == len(g2) == -(-90 // bs)
    torch.testing.assert_close(g2[0], g1[0], rtol=1e-6, atol=1e-7) # the first step: the same weights, the same gradient
    torch.testing.assert_close(h2.batch_losses, h1.batch_losses, rtol=1e-5, atol=0)
    torch.testing.assert_close(h2.epochs[-1]['valid_loss'], h1.epochs[-1]['valid_loss'], rtol=1e-5, atol=0)

def test_grad_accum_runs_the_events_of_each_micro_batch_and_clips_the_whole_gradient():
    seen = []
    class Seen(Callback):
        order = 1
        def after_loss(self, run):
            if run.training: seen.append(('loss', len(run.xb)))
        def after_backward(self, run): seen.append(('backward', len(run.xb), sum(p.grad.norm()**2 for p in run.model.parameters()).sqrt().item()))
    clip = GradClip(1e-3)
    tiny_fit([GradAccum(3), clip, Seen()], epochs=1, n=20, bs=20)
    assert [s[:2] for s in seen] == [('loss', 7), ('loss', 7), ('loss', 6), ('backward', 20)]
    assert clip.norms[0] > 1e-2 and abs(seen[-1][2] - 1e-3) < 1e-6, 'GradClip saw and clipped the whole gradient'
    with pytest.raises(ValueError, match='k must be at least 1, got 0'): GradAccum(0)
    with pytest.raises(TypeError, match='whole number of micro-batches'): GradAccum(2.5)

def test_mixed_precision_bfloat16_on_cpu():
    seen = []
    class D(Callback):
        def after_loss(self, run): seen.append((run.preds.dtype, run.loss.dtype))
    model, res = tiny_fit([MixedPrecision(), D()])
    assert set(seen) == {(torch.bfloat16, torch.bfloat16)} and next(model.parameters()).dtype == torch.float32
    with torch.no_grad(): assert model(data(5)[0]).dtype == torch.float32, 'autocast ends with the forward pass'
    with pytest.raises(ValueError, match='float16 autocast needs a CUDA model'): tiny_fit([MixedPrecision(torch.float16)])
    with pytest.raises(ValueError, match='dtype must be'): MixedPrecision(torch.float32)

def test_lr_find_leaves_everything_as_it_was():
    torch.manual_seed(0); model = mlp(0.2); opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    (x, y) = data(2000)
    dl = BatchLoader(Dataset(x, y), 20, shuffle=True)
    model.eval()
    w, o, rng = weights(model), copy.deepcopy(opt.state_dict()), torch.get_rng_state()
    res = lr_find(model, cross_entropy, opt, dl, start=1e-5, end=100)
    assert same(weights(model), w) and opt.state_dict() == o and torch.equal(torch.get_rng_state(), rng) and not model.training
    assert 1e-5 <= res[1] <= 100 and 1e-6 <= res[0] <= 10 and len(res.lrs) == len(res.losses) <= 100
    assert res.losses[-1] > min(res.losses), 'the range test ran until the loss turned up'
    res.plot()

# ---------- checkpoints: exact resume ----------
class Killed(Exception): pass
class Crash(Callback):
    def __init__(self, at=None): self.at = at
    def after_batch(self, run):
        if (run.epoch, run.iter) == self.at: raise Killed()

def ck_run(path, route, crash_at=None, epochs=2, every=7):
    "A run that draws random numbers in the loader and the model, with momentum and a schedule; None if it crashed"
    torch.manual_seed(0)
    model = mlp(0.3); opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    (x, y), (xv, yv) = data(500), data(101, 2)
    if route == 'BatchLoader': dls = get_dls(Dataset(x, y), Dataset(xv, yv), 20)
    elif route == 'generator': dls = BatchLoader(Dataset(x, y), 20, shuffle=True, generator=torch.Generator().manual_seed(5)), BatchLoader(Dataset(xv, yv), 40)
    else: dls = DataLoader(TensorDataset(x, y), 20, shuffle=True), DataLoader(TensorDataset(xv, yv), 40)
    sched = Schedule(torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=epochs * len(dls[0])))
    try: res = fit(epochs, model, cross_entropy, opt, *dls, progress=False, cbs=[Checkpoint(path, every), sched, Crash(crash_at)])
    except Killed: return None
    return weights(model), res, sched

@pytest.mark.parametrize('route', ['BatchLoader', 'generator', 'DataLoader'])
@pytest.mark.parametrize('crash_at', [(0, 0), (0, 6), (0, 7), (0, 13), (0, 24), (1, 0), (1, 17), (1, 24)])
def test_killed_at_any_batch_resumes_bit_for_bit(tmp_path, route, crash_at):
    ref_w, ref, ref_sched = ck_run(tmp_path/'ref.pt', route)
    assert ck_run(tmp_path/'run.pt', route, crash_at) is None
    w, res, sched = ck_run(tmp_path/'run.pt', route)
    assert same(w, ref_w), 'the same final weights'
    assert no_time(res.history) == no_time(ref.history) and res.history.batch_losses == ref.history.batch_losses
    assert sched.lrs == ref_sched.lrs

def test_resume_does_not_recompute_held_batches(tmp_path):
    "The batches a checkpoint holds are not trained again: count the batches of the resumed run"
    assert ck_run(tmp_path/'run.pt', 'BatchLoader', (1, 17)) is None # the last checkpoint holds 14 batches of epoch 1
    r = Record()
    torch.manual_seed(0); model = mlp(0.3); opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    (x, y), (xv, yv) = data(500), data(101, 2)
    dls = get_dls(Dataset(x, y), Dataset(xv, yv), 20)
    sched = Schedule(torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=2 * len(dls[0])))
    fit(2, model, cross_entropy, opt, *dls, progress=False, cbs=[Checkpoint(tmp_path/'run.pt', 7), sched, Crash(), r])
    assert r.seen.count('after_step') == 25 - 14

def test_finished_run_resumes_to_nothing(tmp_path):
    ref_w, ref, _ = ck_run(tmp_path/'ref.pt', 'BatchLoader')
    w, res, _ = ck_run(tmp_path/'ref.pt', 'BatchLoader') # its checkpoint says every epoch is done
    assert len(res.history) == 2 and no_time(res.history) == no_time(ref.history)

def test_early_stopping_resumes_stopped(tmp_path):
    "A run stopped early and started again stays stopped: the stop is part of the checkpoint"
    def go():
        torch.manual_seed(0); model = mlp(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
        (x, y), (xv, yv) = data(40), data(101, 2)
        return fit(30, model, cross_entropy, opt, *get_dls(Dataset(x, y), Dataset(xv, yv), 20), progress=False,
                   cbs=[Checkpoint(tmp_path/'es.pt'), EarlyStopping(patience=0)])
    first = go()
    assert len(first.history) < 30
    again = go()
    assert no_time(again.history) == no_time(first.history)

@pytest.mark.parametrize('change,msg', [
    (dict(nh=17), r"model has other shapes: 0.weight \(16, 20\), here \(17, 20\)"),
    (dict(opt='Adam'), "its optimizer is SGD, and this run's is Adam"),
    (dict(bs=10), "its epochs have 25 batches of 20 per process, and this run's have 50 of 10"),
    (dict(cbs=[]), r"its callbacks with a state are \['Schedule'\], and this run's are \[\]"),
    (dict(extra=True), r"its model lacks \['4.weight', '4.bias'\]"),
])
def test_checkpoint_that_does_not_fit_loads_nothing(tmp_path, change, msg):
    ck_run(tmp_path/'ck.pt', 'BatchLoader', epochs=1)
    torch.manual_seed(1)
    nh = change.get('nh', 16)
    model = nn.Sequential(nn.Linear(20, nh), nn.ReLU(), nn.Dropout(0.3), nn.Linear(nh, 4), *([nn.Linear(4, 4)] if change.get('extra') else []))
    opt = (torch.optim.Adam if change.get('opt') == 'Adam' else torch.optim.SGD)(model.parameters(), lr=0.1)
    (x, y), (xv, yv) = data(500), data(101, 2)
    dls = get_dls(Dataset(x, y), Dataset(xv, yv), change.get('bs', 20))
    cbs = change.get('cbs', [Schedule(torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=len(dls[0])))])
    before, opt_before = weights(model), copy.deepcopy(opt.state_dict())
    with pytest.raises(CheckpointError, match=msg): fit(1, model, cross_entropy, opt, *dls, progress=False, cbs=[Checkpoint(tmp_path/'ck.pt'), *cbs])
    assert same(weights(model), before) and opt.state_dict() == opt_before, 'nothing was loaded'

class _Evil:
    def __reduce__(self): return (os.system, ('touch pwned',))

def test_checkpoint_runs_no_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({'format': 'miniai-checkpoint-1', 'x': _Evil()}, tmp_path/'ck.pt')
    with pytest.raises(CheckpointError, match='cannot be read as a checkpoint'): tiny_fit([Checkpoint(tmp_path/'ck.pt')])
    assert not (tmp_path/'pwned').exists()

def unreadable(path, kind):
    "Write a checkpoint file that a safe load cannot read: random bytes, a truncated checkpoint, or a pickle holding code"
    if kind == 'random bytes': path.write_bytes(random.Random(0).randbytes(4000))
    elif kind == 'truncated':
        ck_run(path, 'BatchLoader', epochs=1); path.write_bytes(path.read_bytes()[:3000])
    else: torch.save({'format': 'miniai-checkpoint-1', 'x': _Evil()}, path)
    return path.read_bytes()

@pytest.mark.parametrize('kind', ['random bytes', 'truncated', 'code'])
def test_unreadable_checkpoint_is_one_clear_error(tmp_path, kind, monkeypatch):
    "fit stops before any batch with a CheckpointError that names the file and what to do; no code runs; the file is kept"
    monkeypatch.chdir(tmp_path)
    ck = tmp_path/'ck.pt'; before = unreadable(ck, kind)
    r = Record()
    with pytest.raises(CheckpointError) as e: tiny_fit([Checkpoint(ck), r])
    assert str(e.value).startswith(f"{ck} cannot be read as a checkpoint (") and 'delete it, or give another path' in str(e.value)
    assert '\n' not in str(e.value) and 'before_batch' not in r.seen
    assert ck.read_bytes() == before and not (tmp_path/'pwned').exists()

def test_checkpoint_folder_that_cannot_be_written_fails_before_training():
    r = Record()
    with pytest.raises(CheckpointError, match=r'cannot write checkpoints to /proc/nope/ck.pt: .*expected a folder'):
        tiny_fit([Checkpoint('/proc/nope/ck.pt', every=2), r])
    assert 'before_batch' not in r.seen

@pytest.mark.parametrize('make,typ,msg', [
    (lambda: Schedule(42), TypeError, r'Schedule takes a torch.optim.lr_scheduler object .*got int: 42'),
    (lambda: GradClip('1'), TypeError, r"GradClip's max_norm must be a number, got str: '1'"),
    (lambda: GradClip(-1.), ValueError, r"GradClip's max_norm must be at least 0, got -1.0"),
    (lambda: EarlyStopping(patience='2'), TypeError, r"patience must be a whole number of epochs, got str: '2'"),
    (lambda: EarlyStopping(monitor=3), TypeError, r"monitor must be a key of the history"),
    (lambda: Checkpoint(42), TypeError, r"Checkpoint's path must be a str or a Path, got int: 42"),
    (lambda: Checkpoint('x.pt', every=1.5), TypeError, r'every must be a whole number of batches, got float: 1.5'),
])
def test_callbacks_check_their_arguments_when_built(make, typ, msg):
    with pytest.raises(typ, match=msg): make()

def test_checkpoint_rejects_bad_every():
    with pytest.raises(ValueError, match='every must be at least 1, got 0'): Checkpoint('x.pt', every=0)

# ---------- a real kill, from the command line ----------
def mnist(out, ck, timeout=300):
    return ['miniai-mnist', '--epochs', '2', '--seed', '0', '--sched', 'onecycle', '--out', str(out),
            *(['--checkpoint', str(ck), '--every', '150'] if ck else [])]

def test_sigkill_then_same_command_gives_same_weights(tmp_path, mnist_dir):
    "SIGKILL at a few random moments after the first checkpoint; each time the same command resumes to the same weights"
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    ref = subprocess.run(mnist(tmp_path/'ref', None), capture_output=True, text=True, env=env, timeout=300)
    assert ref.returncode == 0, ref.stderr
    rng = random.Random(0)
    for k in range(3):
        out, ck = tmp_path/f'run{k}', tmp_path/f'run{k}'/'ck.pt'
        p = subprocess.Popen(mnist(out, ck), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        t0 = time.time()
        while not ck.exists():
            assert p.poll() is None and time.time() - t0 < 120, p.stderr.read().decode()[-2000:]
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.6))
        p.send_signal(signal.SIGKILL); p.wait()
        again = subprocess.run(mnist(out, ck), capture_output=True, text=True, env=env, timeout=300)
        assert again.returncode == 0, again.stderr
        a, b = (torch.load(d/'mnist_mlp.pt', weights_only=True) for d in (tmp_path/'ref', out))
        assert all(torch.equal(a[n], b[n]) for n in a), f'run {k}: weights differ'
        assert again.stdout.splitlines()[-2] == ref.stdout.splitlines()[-2] # the validation accuracy line
