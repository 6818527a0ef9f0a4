"The training module: metrics, loaders, fit (against a bare loop), safe stops, weights and the miniai-mnist command."
import copy, math, os, pickle, random, subprocess, sys
from pathlib import Path
import pytest, torch
from torch import nn
from torch.utils.data import TensorDataset
from miniai.losses import cross_entropy
from miniai.training import (accuracy, top_k_error, report, Dataset, BatchLoader, get_dls, fit, evaluate, History,
                             FitResult, NonFiniteLossError, save_weights, load_weights, mnist_main)

@pytest.fixture(scope='module')
def mnist(mnist_dir):
    from miniai.datasets import get_mnist
    return get_mnist(mnist_dir)

def mlp(nh=50, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, nh), nn.ReLU(), nn.Linear(nh, 10))

def test_accuracy_and_top_k():
    out = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    y = torch.tensor([2, 0, 2, 2])
    assert accuracy(out, y).item() == 0.5
    assert top_k_error(out, y, 1).item() == 0.5
    assert top_k_error(out, y, 2).item() == 0.25   # row 3's target is third
    assert top_k_error(out, y, 3).item() == 0.0
    with pytest.raises(ValueError, match=r'k must be between 1 and the number of classes \(3\), got 4'): top_k_error(out, y, 4)

def test_report(capsys):
    out = torch.tensor([[2., 1.], [0., 3.], [1., 0.]], requires_grad=True)
    y = torch.tensor([0, 1, 1])
    report(cross_entropy(out, y), out, y)
    assert capsys.readouterr().out == f"{cross_entropy(out, y).item():.2f}, 0.67\n"

def test_dataset():
    x, y = torch.arange(10.).view(5, 2), torch.arange(5)
    ds = Dataset(x, y)
    assert len(ds) == 5 and ds[3][1].item() == 3 and torch.equal(ds[1:3][0], x[1:3])
    with pytest.raises(ValueError, match='same length, got 5 and 4'): Dataset(x, y[:4])

def test_batchloader_covers_each_item_once_in_a_new_order():
    ds = Dataset(torch.arange(103.)[:, None], torch.arange(103))
    dl = BatchLoader(ds, 10, shuffle=True)
    assert len(dl) == 11
    e1, e2 = (torch.cat([yb for _, yb in dl]) for _ in range(2))
    assert sorted(e1.tolist()) == list(range(103)) and sorted(e2.tolist()) == list(range(103))
    assert not torch.equal(e1, e2)
    for xb, yb in dl: assert torch.equal(xb[:, 0].long(), yb)   # inputs and targets stay paired
    dl = BatchLoader(ds, 10, shuffle=True, drop_last=True)
    assert len(dl) == 10 and [len(b[1]) for b in dl] == [10] * 10
    with pytest.raises(ValueError, match='at least 1'): BatchLoader(ds, 0)

def test_batchloader_gives_the_bare_loops_batches():
    x, y = torch.randn(57, 3), torch.randint(0, 3, (57,))
    got = list(BatchLoader(Dataset(x, y), 8, shuffle=True, generator=torch.Generator().manual_seed(5)))
    idx = torch.randperm(57, generator=torch.Generator().manual_seed(5))
    want = [(x[idx[i:i+8]], y[idx[i:i+8]]) for i in range(0, 57, 8)]
    assert len(got) == len(want) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want))

def test_unshuffled_batches_are_views():
    x, y = torch.randn(20, 3), torch.arange(20)
    xb, yb = next(iter(BatchLoader(Dataset(x, y), 8)))
    assert xb.data_ptr() == x.data_ptr() and torch.equal(yb, y[:8])

def test_get_dls_fast_and_fallback():
    tr, va = Dataset(torch.randn(30, 4), torch.arange(30)), Dataset(torch.randn(10, 4), torch.arange(10))
    tdl, vdl = get_dls(tr, va, 4)
    assert isinstance(tdl, BatchLoader) and tdl.shuffle and not vdl.shuffle and vdl.bs == 8
    for args, kw in (((TensorDataset(tr.x, tr.y), TensorDataset(va.x, va.y), 4), {}), ((tr, va, 4), dict(num_workers=0))):
        tdl, vdl = get_dls(*args, **kw)
        assert isinstance(tdl, torch.utils.data.DataLoader) and vdl.batch_size == 8
        assert sorted(torch.cat([yb for _, yb in tdl]).tolist()) == list(range(30))
        assert isinstance(tdl.sampler, torch.utils.data.RandomSampler)

def bare_loop(model, opt, x, y, xv, yv, bs, epochs):
    "What fit must compute: randperm + slicing, the same update, the same validation"
    for _ in range(epochs):
        idx = torch.randperm(len(x))
        for i in range(0, len(x), bs):
            b = idx[i:i+bs]
            loss = cross_entropy(model(x[b]), y[b]); loss.backward(); opt.step(); opt.zero_grad()
    with torch.no_grad():
        preds = model(xv)
        return cross_entropy(preds, yv).item(), accuracy(preds, yv).item()

def test_fit_computes_what_the_bare_loop_computes(mnist, capsys):
    (x, y), (xv, yv), _ = mnist
    x, y, xv, yv = x[:3000], y[:3000], xv[:1000], yv[:1000]
    m1, m2 = mlp(), mlp()
    torch.manual_seed(1)
    want = bare_loop(m1, torch.optim.SGD(m1.parameters(), lr=0.5), x, y, xv, yv, 50, 2)
    torch.manual_seed(1)
    res = fit(2, m2, cross_entropy, torch.optim.SGD(m2.parameters(), lr=0.5), *get_dls(Dataset(x, y), Dataset(xv, yv), 50), progress=False)
    for p1, p2 in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(p1, p2)
    assert isinstance(res, FitResult) and isinstance(res, tuple) and len(res) == 2 and not res.interrupted
    assert res[0] == pytest.approx(want[0], rel=1e-5) and res[1] == pytest.approx(want[1], abs=1e-6)
    h = res.history
    assert len(h) == 2 and len(h.batch_losses) == 2 * 60 and h.epochs[1]['valid_acc'] == res[1]
    assert h.epochs[1]['train_loss'] < h.epochs[0]['train_loss'] and res[1] > 0.85
    out = capsys.readouterr().out
    assert out.count('epoch ') == 2 and 'valid accuracy' in out and '<progress' not in out   # quiet: no bar in logs

def test_history_plot(mnist):
    h = History()
    h.batch_losses = [2.3 - 0.01 * i for i in range(200)]
    h.epochs = [dict(epoch=e, train_loss=1., valid_loss=0.5 - 0.1 * e, valid_acc=0.9, seconds=1.) for e in range(2)]
    fig = h.plot()
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and list(ax.lines[1].get_ydata()) == [0.5, 0.4]
    assert 'epoch' in repr(h) and '0.4000' in repr(h)

def test_nonfinite_loss_names_the_batch(mnist):
    (x, y), (xv, yv), _ = mnist
    x = x[:500].clone(); x[234, 10] = math.inf
    model = mlp()
    loss_calls = []
    def loss_func(p, t):
        loss_calls.append(1)
        return cross_entropy(p, t)
    with pytest.raises(NonFiniteLossError, match=r'became (nan|inf) at epoch 0, batch 4: lower the learning rate or check the inputs'):
        fit(1, model, loss_func, torch.optim.SGD(model.parameters(), lr=0.1),
            BatchLoader(Dataset(x, y[:500]), 50), BatchLoader(Dataset(xv[:100], yv[:100]), 100), progress=False)
    assert len(loss_calls) == 5 and all(p.isfinite().all() for p in model.parameters()), 'no update from the bad batch'

def test_ctrl_c_keeps_history(mnist, capsys):
    (x, y), (xv, yv), _ = mnist
    model, calls = mlp(), [0]
    def loss_func(p, t):
        calls[0] += 1
        if calls[0] == 25: raise KeyboardInterrupt   # during the 3rd epoch of 10 batches
        return cross_entropy(p, t)
    res = fit(5, model, loss_func, torch.optim.SGD(model.parameters(), lr=0.5),
              BatchLoader(Dataset(x[:500], y[:500]), 50), BatchLoader(Dataset(xv[:100], yv[:100]), 100), progress=False)
    assert res.interrupted and len(res.history) == 2 and res[1] == res.history.epochs[-1]['valid_acc']
    assert 'Interrupted at epoch 2, batch 2: kept the history of 2 finished epochs' in capsys.readouterr().err

def test_weights_roundtrip_and_refuse_code(tmp_path):
    a, b = mlp(seed=1), mlp(seed=2)
    load_weights(b, save_weights(a, tmp_path/'w'/'a.pt'))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    class Evil:
        def __reduce__(self): return (os.system, (f"touch {tmp_path/'pwned'}",))
    torch.save({'0.weight': Evil()}, tmp_path/'evil.pt')
    with pytest.raises(pickle.UnpicklingError, match=f"{tmp_path/'evil.pt'} cannot be read as weights saved by save_weights"): load_weights(b, tmp_path/'evil.pt')
    assert not (tmp_path/'pwned').exists()
    for seed, kind in ((0, pickle.UnpicklingError), (2, RuntimeError)): # junk that the unpickler rejects, and junk that breaks it (IndexError)
        (tmp_path/'junk.pt').write_bytes(random.Random(seed).randbytes(1000))
        with pytest.raises(kind, match=f"{tmp_path/'junk.pt'} cannot be read"): load_weights(b, tmp_path/'junk.pt')
    (tmp_path/'cut.pt').write_bytes((tmp_path/'w'/'a.pt').read_bytes()[:500])
    with pytest.raises(RuntimeError, match=f"{tmp_path/'cut.pt'} cannot be read .*PytorchStreamReader"): load_weights(b, tmp_path/'cut.pt')

def test_mnist_main(mnist_dir, tmp_path, capsys):
    assert mnist_main(['--epochs', '1', '--out', str(tmp_path), '--data', str(mnist_dir), '--nh', '20']) == 0
    out = capsys.readouterr().out
    acc = float(out.split('validation accuracy: ')[1].split()[0])
    assert acc > 0.9 and (tmp_path/'mnist_loss.png').stat().st_size > 1000
    model = load_weights(nn.Sequential(nn.Linear(784, 20), nn.ReLU(), nn.Linear(20, 10)), tmp_path/'mnist_mlp.pt')
    from miniai.datasets import get_mnist
    _, (xv, yv), _ = get_mnist(mnist_dir)
    with torch.no_grad(): assert accuracy(model(xv), yv).item() == pytest.approx(acc, abs=1e-4)

def test_console_script_installed(mnist_dir, tmp_path):
    env = {**os.environ, 'MINIAI_DATA': str(mnist_dir)}
    r = subprocess.run(['miniai-mnist', '--help'], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and '--epochs' in r.stdout and '--lr' in r.stdout and 'hidden units' in r.stdout
    r = subprocess.run(['miniai-mnist', '--epochs', '1', '--out', str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'validation accuracy: 0.9' in r.stdout and (tmp_path/'mnist_mlp.pt').exists()

def test_empty_loaders_are_errors():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = BatchLoader(Dataset(torch.randn(10, 784), torch.randint(0, 10, (10,))), 5)
    empty = BatchLoader(Dataset(torch.randn(0, 784), torch.zeros(0, dtype=torch.long)), 5)
    with pytest.raises(ValueError, match='training loader yielded no batches'): fit(1, model, cross_entropy, opt, empty, data, progress=False)
    with pytest.raises(ValueError, match='validation loader yielded no batches'): fit(1, model, cross_entropy, opt, data, empty, progress=False)
    with pytest.raises(ValueError, match='epochs must be at least 1, got 0'): fit(0, model, cross_entropy, opt, data, data, progress=False)

def test_save_weights_is_atomic(tmp_path, monkeypatch):
    "A crash while saving leaves the previous file as it was, and no temporary file behind"
    a, b = mlp(seed=1), mlp(seed=2)
    f = save_weights(a, tmp_path/'m.pt')
    before = f.read_bytes()
    real_save = torch.save
    def dies_halfway(obj, path, *args, **kw):
        real_save(obj, path, *args, **kw)
        with open(path, 'r+b') as fh: fh.truncate(100) # half a file on disk...
        raise KeyboardInterrupt # ...and then the user presses Ctrl-C
    monkeypatch.setattr(torch, 'save', dies_halfway)
    with pytest.raises(KeyboardInterrupt): save_weights(b, f)
    monkeypatch.undo()
    assert f.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['m.pt']
    load_weights(b, f)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))

def test_one_process_has_no_process_group():
    import torch.distributed as dist
    from miniai.training import world, all_sum, from_rank0
    assert not dist.is_initialized() and world() == (0, 1)
    t = torch.arange(3)
    assert all_sum(1.5, 2) == [1.5, 2] and from_rank0(t) is t

def test_distributed_names_still_import_from_training():
    "The collectives and DDPCB live in miniai.distributed, below training; miniai.training still gives the same objects"
    import miniai.training as T, miniai.distributed as D
    from miniai.callbacks import _stateful
    for k in ('world', 'all_sum', 'from_rank0', 'all_gather', 'DDPCB', '_let_go', '_ddp'): assert getattr(T, k) is getattr(D, k)
    assert {'world', 'all_sum', 'from_rank0', 'all_gather', 'DDPCB'} <= set(T.__all__)
    assert not any(isinstance(cb, D.DDPCB) for cb in _stateful(T.default_cbs(False))) # a checkpoint passes it over, as before
    alone = subprocess.run([sys.executable, '-c', "import sys, miniai.distributed; print('miniai.training' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert alone.stdout.strip() == 'False' # distributed imports nothing of training
