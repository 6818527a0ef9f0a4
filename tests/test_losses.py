"miniai.losses against torch.nn.functional: values, input gradients and errors, over random shapes, dtypes and options."
import math
import pytest, torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from hypothesis import given, settings, strategies as st, HealthCheck
import miniai.losses as L

settings.register_profile('miniai', max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile('miniai')

TOL = {torch.float64: dict(rtol=1e-9, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5),
       torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}

def close(a, b, dtype):
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    torch.testing.assert_close(a, b, equal_nan=True, **TOL[dtype])

def value_and_grad(f, x, *args, gdtype=None, **kw):
    "f's output, and the gradient of a fixed random weighting of it (drawn in float64, rounded to `gdtype`) with respect to x"
    x = x.detach().clone().requires_grad_()
    out = f(x, *args, **kw)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(gdtype or out.dtype)
    return out.detach(), torch.autograd.grad(out, x, g.to(out.dtype))[0]

def _hi(a): return a.double() if torch.is_tensor(a) and a.is_floating_point() else a

def no_worse(o, r, truth, dtype):
    "Low precision: ours is at least as close to the float64 truth as PyTorch's, give or take the dtype's tolerance"
    assert o.dtype == r.dtype and o.shape == r.shape, (o.dtype, r.dtype, o.shape, r.shape)
    o, r = o.double(), r.double()
    fin = truth.isfinite()
    torch.testing.assert_close(o[~fin], r[~fin], equal_nan=True, rtol=0, atol=0)
    t = TOL[dtype]
    err_o, err_r = (o - truth)[fin].abs(), (r - truth)[fin].abs()
    assert (err_o <= err_r + t['atol'] + t['rtol'] * truth[fin].abs()).all(), (err_o.max(), err_r.max())

def both(ours, ref, x, *args, dtype, **kw):
    "Compare ours with PyTorch: same value and input gradient, in the input's dtype"
    o, go = value_and_grad(ours, x, *args, **kw)
    r, gr = value_and_grad(ref, x, *args, **kw)
    if dtype == torch.float64: close(o, r, dtype); close(go, gr, dtype); return
    try:
        if dtype == torch.float32: close(o, r, dtype); close(go, gr, dtype); return
    except AssertionError: pass
    # PyTorch's own float32/half/bfloat16 results carry rounding error (its logsumexp backward, for one, uses the
    # rounded result): where they differ from ours, ours must be at least as close to float64 on the same inputs.
    t, gt = value_and_grad(ref, _hi(x), *map(_hi, args), gdtype=dtype, **{k: _hi(v) for k, v in kw.items()})
    no_worse(o, r, t, dtype); no_worse(go, gr, gt, dtype)

# ---------- strategies ----------
dtypes = st.sampled_from([torch.float32, torch.float64])
all_dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16])
reductions = st.sampled_from(['none', 'mean', 'sum'])

@st.composite
def class_problem(draw, probs=False):
    "logits of shape (C,), (N, C) or (N, C, d1, ...) with class-index or probability targets and options"
    C = draw(st.integers(1, 7))
    kind = draw(st.sampled_from(['unbatched', '2d', 'nd']))
    N = draw(st.integers(0, 6))
    extra = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)) if kind == 'nd' else []
    shape = (C,) if kind == 'unbatched' else (N, C, *extra)
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([1., 10., 100.]))
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    tshape = () if kind == 'unbatched' else (N, *extra)
    if probs:
        t = torch.rand(shape, generator=g, dtype=torch.float64)
        t = t / t.sum(0 if kind == 'unbatched' else 1, keepdim=True)
    else:
        t = torch.randint(0, C, tshape, generator=g)
        if draw(st.booleans()) and t.numel():
            ii = draw(st.sampled_from([-100, 0, C - 1, 5]))
            mask = torch.rand(tshape, generator=g) < draw(st.sampled_from([0.3, 1.0]))
            t = torch.where(mask, ii, t)
        else: ii = -100
    w = torch.rand(C, generator=g, dtype=torch.float64) + draw(st.sampled_from([0., 0.5])) if draw(st.booleans()) else None
    ls = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    return x, t, w, (-100 if probs else ii), ls

def cast(x, t, w, dtype, probs=False):
    return x.to(dtype), (t.to(dtype) if probs else t), (None if w is None else w.to(dtype))

# ---------- cross entropy and nll ----------
@pytest.mark.usefixtures('ce_route')
@given(class_problem(), dtypes, reductions)
def test_cross_entropy_class_targets(p, dtype, red):
    x, t, w, ii, ls = p
    x, t, w = cast(x, t, w, dtype)
    kw = dict(weight=w, ignore_index=ii, reduction=red, label_smoothing=ls)
    both(L.cross_entropy, F.cross_entropy, x, t, dtype=dtype, **kw)

@given(class_problem(probs=True), dtypes, reductions)
def test_cross_entropy_prob_targets(p, dtype, red):
    x, t, w, _, ls = p
    x, t, w = cast(x, t, w, dtype, probs=True)
    both(L.cross_entropy, F.cross_entropy, x, t, dtype=dtype, weight=w, reduction=red, label_smoothing=ls)

@given(class_problem(), dtypes, reductions)
def test_nll_loss(p, dtype, red):
    x, t, w, ii, _ = p
    x, t, w = cast(x, t, w, dtype)
    lp = F.log_softmax(x, 0 if x.dim() == 1 else 1)
    both(L.nll_loss, F.nll_loss, lp, t, dtype=dtype, weight=w, ignore_index=ii, reduction=red)

@pytest.mark.usefixtures('ce_route')
@given(class_problem(), st.sampled_from([torch.float16, torch.bfloat16]), reductions, st.booleans())
def test_low_precision_returns_own_dtype(p, dtype, red, probs):
    x, t, w, ii, ls = p
    if probs: t = F.softmax(torch.randn_like(x), 0 if x.dim() == 1 else 1); ii = -100
    x, t, w = cast(x / 10, t, w, dtype, probs)
    kw = dict(weight=w, ignore_index=ii, reduction=red, label_smoothing=ls)
    both(L.cross_entropy, F.cross_entropy, x, t, dtype=dtype, **kw)

@pytest.mark.usefixtures('ce_route')
def test_uint8_targets():
    x, t = torch.randn(5, 4), torch.tensor([0, 3, 1, 2, 2], dtype=torch.uint8)
    both(L.cross_entropy, F.cross_entropy, x, t, dtype=torch.float32)

@pytest.mark.usefixtures('ce_route')
def test_mnist_sized_batch(mnist_dir):
    from miniai.datasets import get_mnist
    (x, y), _, _ = get_mnist(mnist_dir)
    torch.manual_seed(0)
    logits = nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10))(x).detach()
    w = torch.rand(10)
    for kw in ({}, dict(weight=w), dict(label_smoothing=0.1), dict(weight=w, label_smoothing=0.2, ignore_index=3)):
        both(L.cross_entropy, F.cross_entropy, logits, y, dtype=torch.float32, **kw)
    loss = L.cross_entropy(logits, y)
    assert abs(loss.item() - math.log(10)) < 0.1, 'an untrained classifier starts near ln(C)'

# ---------- softmax family ----------
@st.composite
def tensor_and_dim(draw):
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    return torch.randn(shape, generator=g, dtype=torch.float64) * draw(st.sampled_from([1., 50., 1e4])), dim

@given(tensor_and_dim(), all_dtypes)
def test_softmax_family(xd, dtype):
    x, dim = xd
    x = x.to(dtype)
    both(L.softmax, F.softmax, x, dim, dtype=dtype)
    both(L.log_softmax, F.log_softmax, x, dim, dtype=dtype)
    for keep in (False, True): both(L.logsumexp, torch.logsumexp, x, dim, keepdim=keep, dtype=dtype)

def test_softmax_dtype_argument():
    x = torch.randn(3, 4)
    for f, ref in ((L.softmax, F.softmax), (L.log_softmax, F.log_softmax)):
        close(f(x.half(), 1, dtype=torch.float64), ref(x.half(), 1, dtype=torch.float64), torch.float64)

def test_logsumexp_integers_and_empty():
    close(L.logsumexp(torch.tensor([1, 2]), 0), torch.logsumexp(torch.tensor([1, 2]), 0), torch.float32)
    close(L.logsumexp(torch.zeros(2, 0), 1), torch.logsumexp(torch.zeros(2, 0), 1), torch.float32)

@given(st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=20), all_dtypes)
def test_log_sigmoid(vals, dtype):
    x = torch.tensor(vals, dtype=dtype)
    both(L.log_sigmoid, F.logsigmoid, x, dtype=dtype)

@given(tensor_and_dim(), dtypes, reductions, st.booleans(), st.booleans())
def test_bce_with_logits(xd, dtype, red, use_w, use_pw):
    x, _ = xd
    g = torch.Generator().manual_seed(3)
    y = torch.rand(x.shape, generator=g, dtype=torch.float64).to(dtype)
    w = torch.rand(x.shape[-1:], generator=g, dtype=torch.float64).to(dtype) if use_w else None
    pw = (torch.rand(x.shape[-1:], generator=g, dtype=torch.float64) * 3).to(dtype) if use_pw else None
    both(L.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, x.to(dtype), y,
         dtype=dtype, weight=w, reduction=red, pos_weight=pw)

# ---------- gradcheck in float64 ----------
def _x(*shape): return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

@pytest.mark.usefixtures('ce_route')
@pytest.mark.parametrize('red', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('ls', [0.0, 0.3])
@pytest.mark.parametrize('use_w', [False, True])
@pytest.mark.parametrize('shape', [(6, 5), (3, 4, 2), (5,)])
def test_gradcheck_cross_entropy(red, ls, use_w, shape):
    torch.manual_seed(0)
    x = _x(*shape); C = shape[1] if len(shape) > 1 else shape[0]
    t = torch.randint(0, C, (shape[0], *shape[2:]) if len(shape) > 1 else ())
    if t.dim() and t.numel() > 1: t.view(-1)[0] = -100
    w = torch.rand(C, dtype=torch.float64) if use_w else None
    f = lambda x: L.cross_entropy(x, t, w, reduction=red, label_smoothing=ls)
    assert gradcheck(f, (x,)) and gradgradcheck(f, (x,))
    p = torch.softmax(torch.randn(shape, dtype=torch.float64), 1 if len(shape) > 1 else 0)
    assert gradcheck(lambda x: L.cross_entropy(x, p, w, reduction=red, label_smoothing=ls), (x,))

def test_gradcheck_the_rest():
    x, t, w = _x(5, 4), torch.tensor([0, 3, -100, 1, 2]), torch.rand(4, dtype=torch.float64)
    assert gradcheck(lambda x: L.nll_loss(x, t, w), (x,))
    for dim in (0, 1, -1):
        assert gradcheck(lambda x: L.softmax(x, dim), (x,))
        assert gradcheck(lambda x: L.log_softmax(x, dim), (x,))
        assert gradcheck(lambda x: L.logsumexp(x, dim), (x,))
    assert gradcheck(L.log_sigmoid, (_x(10) * 5,))
    y, pw = torch.rand(5, 4, dtype=torch.float64), torch.rand(4, dtype=torch.float64) * 3
    assert gradcheck(lambda x: L.binary_cross_entropy_with_logits(x, y, w, pos_weight=pw), (x,))

@pytest.mark.usefixtures('ce_route')
def test_backward_twice_with_retain_graph():
    x, t = torch.randn(4, 3, requires_grad=True), torch.tensor([0, 1, 2, 1])
    loss = L.cross_entropy(x, t)
    g1 = torch.autograd.grad(loss, x, retain_graph=True)[0]
    g2 = torch.autograd.grad(loss, x)[0]
    close(g1, g2, torch.float32)
    close(g1, torch.autograd.grad(F.cross_entropy(x, t), x)[0], torch.float32)

@pytest.mark.usefixtures('ce_route')
@pytest.mark.parametrize('shape', [(64, 10), (40_000, 10), (300, 1000), (50, 30, 400)])   # one chunk, and several
def test_no_grad_forward(shape):
    x, t = torch.randn(shape), torch.randint(0, shape[1], (shape[0], *shape[2:]))
    w = torch.rand(shape[1])
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            close(L.cross_entropy(x, t, w, label_smoothing=0.1), F.cross_entropy(x, t, w, label_smoothing=0.1), torch.float32)
    both(L.cross_entropy, F.cross_entropy, x, t, dtype=torch.float32, weight=w, label_smoothing=0.1, reduction='none')

# ---------- semantics at the edges ----------
inf = math.inf
@pytest.mark.parametrize('x,t', [
    ([[-inf, -inf, -inf], [0, 1, 2]], [0, 1]),       # a row of -inf
    ([[-inf, 0, 1], [0, 1, 2]], [0, 1]),             # the target's logit is -inf
    ([[inf, 0, 1], [0, 1, 2]], [1, 1]),              # +inf in a row
    ([[1e4, -1e4, 0], [-1e4, 1e4, 0]], [1, 1]),      # huge logits
    ([[3e38, -3e38, 0], [3e38, 3e38, 3e38]], [0, 1]),  # near float32's max
    ([[3e38, -3e38, 0]], [1]),                       # a true loss above float32's max
])
@pytest.mark.usefixtures('ce_route')
@pytest.mark.parametrize('red', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('ls', [0.0, 0.1])
def test_extreme_logits(x, t, red, ls):
    x, t = torch.tensor(x), torch.tensor(t)
    o, r = L.cross_entropy(x, t, reduction=red, label_smoothing=ls), F.cross_entropy(x, t, reduction=red, label_smoothing=ls)
    close(o, r, torch.float32)
    assert torch.equal(o.isfinite(), r.isfinite())
    if r.isfinite().all():
        both(L.cross_entropy, F.cross_entropy, x, t, dtype=torch.float32, reduction=red, label_smoothing=ls)
    for f, ref in ((L.log_softmax, F.log_softmax), (L.softmax, F.softmax)): close(f(x, 1), ref(x, 1), torch.float32)
    close(L.logsumexp(x, 1), torch.logsumexp(x, 1), torch.float32)

@pytest.mark.usefixtures('ce_route')
@pytest.mark.parametrize('kw', [{}, dict(label_smoothing=0.1), dict(weight=torch.rand(10)), dict(weight=torch.rand(10), label_smoothing=0.2)])
def test_empty_and_all_ignored(kw):
    empty, et = torch.randn(0, 10, requires_grad=True), torch.zeros(0, dtype=torch.long)
    ign, it = torch.randn(3, 10, requires_grad=True), torch.full((3,), -100)
    for x, t in ((empty, et), (ign, it)):
        assert L.cross_entropy(x, t, **kw).isnan() and F.cross_entropy(x, t, **kw).isnan()
        assert L.cross_entropy(x, t, reduction='sum', **kw).item() == 0 == F.cross_entropy(x, t, reduction='sum', **kw).item()
        assert L.cross_entropy(x, t, reduction='none', **kw).shape == t.shape
        lw = {k: v for k, v in kw.items() if k == 'weight'}
        assert L.nll_loss(x, t, **lw).isnan() and L.nll_loss(x, t, reduction='sum', **lw).item() == 0
    both(L.cross_entropy, F.cross_entropy, ign, it, dtype=torch.float32, reduction='sum', **kw)

@pytest.mark.usefixtures('ce_route')
def test_ignore_index_inside_class_range():
    x, t = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 2, 2])
    both(L.cross_entropy, F.cross_entropy, x, t, dtype=torch.float32, ignore_index=2, weight=torch.rand(4), label_smoothing=0.3)

def test_weight_mean_divides_by_summed_weights():
    x, t, w = torch.randn(4, 3), torch.tensor([0, 0, 1, 2]), torch.tensor([1., 2., 3.])
    per = L.cross_entropy(x, t, w, reduction='none')
    close(L.cross_entropy(x, t, w), per.sum() / (1 + 1 + 2 + 3), torch.float32)

@pytest.mark.usefixtures('ce_route')
def test_worked_examples():
    assert round(L.nll_loss(torch.tensor([[0.7, 0.2, 0.1]]).log(), torch.tensor([0])).item(), 3) == 0.357
    assert round(L.nll_loss(torch.tensor([[0.1, 0.3, 0.6]]).log(), torch.tensor([0])).item(), 3) == 2.303
    v = L.cross_entropy(torch.tensor([[0.1, 0., 0., 1.]]), torch.tensor([3])).item()
    assert abs(v - (-1 + math.log(math.exp(0.1) + 2 + math.e))) < 1e-6 and round(v, 4) == 0.7619

# ---------- errors ----------
x3 = torch.randn(3, 10)
y3 = torch.tensor([1, 2, 3])
BAD = {
    'target out of range': (lambda m: m.cross_entropy(x3, torch.tensor([1, 2, 10])), r'Target 10 is out of bounds for 10 classes'),
    'negative target': (lambda m: m.cross_entropy(x3, torch.tensor([1, -1, 3])), r'Target -1 is out of bounds for 10 classes'),
    'negative target, nll': (lambda m: m.nll_loss(x3, torch.tensor([1, -5, 3])), r'Target -5 is out of bounds'),
    'int32 targets': (lambda m: m.cross_entropy(x3, y3.int()), r'torch\.int64.*got torch\.int32'),
    'float class targets': (lambda m: m.cross_entropy(x3, y3.float()), r"got torch\.float32; class-probability targets must have the input's shape"),
    'batch-size mismatch': (lambda m: m.cross_entropy(x3, torch.tensor([1, 2])), r'batch_size \(3\) to match target batch_size \(2\)'),
    'batch-size mismatch, nll': (lambda m: m.nll_loss(x3, torch.tensor([1, 2])), r'batch_size \(3\) to match target batch_size \(2\)'),
    'weight of the wrong length': (lambda m: m.cross_entropy(x3, y3, weight=torch.ones(5)), r'all 10 classes.*shape: \[5\]'),
    'weight of the wrong dtype': (lambda m: m.cross_entropy(x3, y3, weight=torch.ones(10, dtype=torch.float64)), r'weight'),
    'label_smoothing > 1': (lambda m: m.cross_entropy(x3, y3, label_smoothing=1.5), r'between 0\.0 and 1\.0\. Got: 1\.5'),
    'unknown reduction': (lambda m: m.cross_entropy(x3, y3, reduction='avg'), r'avg is not a valid value for reduction'),
    'unknown reduction, nll': (lambda m: m.nll_loss(x3, y3, reduction='avg'), r'avg is not a valid value for reduction'),
    'unknown reduction, bce': (lambda m: m.binary_cross_entropy_with_logits(x3, x3, reduction='x'), r'x is not a valid value'),
    'ignore_index with probabilities': (lambda m: m.cross_entropy(x3, x3.softmax(1), ignore_index=1), r'ignore_index is not supported for floating point target'),
    'integer probability targets': (lambda m: m.cross_entropy(x3, torch.zeros(3, 10, dtype=torch.long)), r'floating point type for target with class probabilities'),
    'multi-target': (lambda m: m.cross_entropy(x3, torch.zeros(3, 2, dtype=torch.long)), r'multi-target not supported'),
    'spatial target shape': (lambda m: m.cross_entropy(torch.randn(2, 10, 4), torch.zeros(2, 3, dtype=torch.long)), r'Expected target size \[2, 4\], got \[2, 3\]'),
    'bce target shape': (lambda m: m.binary_cross_entropy_with_logits(torch.randn(4), torch.rand(3)), r'Target size .* must be the same as input size'),
    'bce integer target': (lambda m: m.binary_cross_entropy_with_logits(torch.randn(4), torch.ones(4, dtype=torch.long)), r'floating|cast'),
    'unbatched input, 2-D target': (lambda m: m.cross_entropy(torch.randn(10), torch.zeros(1, 2, dtype=torch.long)), r'multi-target not supported.*got shape \(1, 2\)'),
    'unbatched input, 2 targets': (lambda m: m.cross_entropy(torch.randn(10), torch.zeros(2, dtype=torch.long)), r'1D target must have size 1, but got target size: 2'),
    'batched input, 0-d target': (lambda m: m.cross_entropy(torch.randn(3, 10), torch.tensor(1)), r'batch_size \(3\) to match target batch_size \(0\)'),
    'spatial input, 0-d target': (lambda m: m.nll_loss(torch.randn(2, 10, 3), torch.tensor(1)), r'batch_size \(2\) to match target batch_size \(0\)'),
}
TORCH = {'cross_entropy': F.cross_entropy, 'nll_loss': F.nll_loss, 'binary_cross_entropy_with_logits': F.binary_cross_entropy_with_logits}
class _TorchNS:
    def __getattr__(self, k): return TORCH[k]

@pytest.mark.usefixtures('ce_route')
@pytest.mark.parametrize('name', list(BAD))
def test_errors_match_torch(name):
    call, msg = BAD[name]
    with pytest.raises(Exception) as theirs: call(_TorchNS())
    with pytest.raises(theirs.type, match=msg): call(L)

@pytest.mark.usefixtures('ce_route')
def test_errors_torch_lets_through():
    "Where PyTorch returns a silent number for nonsense, we raise"
    F.cross_entropy(x3, y3, label_smoothing=-0.1)   # PyTorch accepts this
    with pytest.raises(RuntimeError, match=r'between 0\.0 and 1\.0\. Got: -0\.1'): L.cross_entropy(x3, y3, label_smoothing=-0.1)
    with pytest.raises(RuntimeError, match='class dimension'): L.cross_entropy(torch.tensor(1.), torch.tensor(0))
    with pytest.raises(ValueError, match='not a valid value for reduction'): L.CrossEntropyLoss(reduction='avg')

# ---------- modules ----------
@pytest.mark.parametrize('ours,theirs,args', [
    (L.CrossEntropyLoss, nn.CrossEntropyLoss, dict(weight=torch.rand(10), ignore_index=3, label_smoothing=0.2)),
    (L.CrossEntropyLoss, nn.CrossEntropyLoss, dict(reduction='sum')),
    (L.NLLLoss, nn.NLLLoss, dict(weight=torch.rand(10), ignore_index=1, reduction='none')),
])
def test_class_modules(ours, theirs, args):
    x, t = torch.randn(8, 10), torch.randint(0, 10, (8,))
    if ours is L.NLLLoss: x = x.log_softmax(1)
    a, b = ours(**args), theirs(**args)
    close(a(x, t), b(x, t), torch.float32)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert [n for n, _ in a.named_buffers()] == [n for n, _ in b.named_buffers()]

def test_bce_module_and_legacy_args():
    x, y, pw = torch.randn(6, 3), torch.rand(6, 3), torch.rand(3)
    a, b = L.BCEWithLogitsLoss(pos_weight=pw), nn.BCEWithLogitsLoss(pos_weight=pw)
    close(a(x, y), b(x, y), torch.float32)
    assert a.state_dict().keys() == b.state_dict().keys()
    with pytest.warns(UserWarning):
        for kw, red in ((dict(reduce=False), 'none'), (dict(size_average=False), 'sum'), (dict(size_average=True), 'mean')):
            assert L.CrossEntropyLoss(**kw).reduction == nn.CrossEntropyLoss(**kw).reduction == red

# ---------- built from primitives ----------
@pytest.mark.usefixtures('ce_route')
def test_does_not_call_what_it_reimplements(monkeypatch):
    x, t = torch.randn(5, 4, requires_grad=True), torch.tensor([0, 1, 2, 3, -100])
    expected = [F.cross_entropy(x, t, label_smoothing=0.1), F.nll_loss(x, t), F.softmax(x, 1), F.log_softmax(x, 1),
                torch.logsumexp(x, 1), F.logsigmoid(x), F.binary_cross_entropy_with_logits(x, x.sigmoid())]
    def boom(*a, **k): raise AssertionError('called the PyTorch function being re-implemented')
    for mod, names in ((F, ['cross_entropy', 'nll_loss', 'softmax', 'log_softmax', 'logsigmoid', 'binary_cross_entropy_with_logits']),
                       (torch, ['logsumexp', 'log_softmax', 'softmax', 'nll_loss', 'binary_cross_entropy_with_logits']),
                       (torch.Tensor, ['logsumexp', 'log_softmax', 'softmax']), (torch._C._nn, ['nll_loss', 'nll_loss_nd', 'cross_entropy_loss', 'log_sigmoid'])):
        for n in names:
            if hasattr(mod, n): monkeypatch.setattr(mod, n, boom)
    got = [L.cross_entropy(x, t, label_smoothing=0.1), L.nll_loss(x, t), L.softmax(x, 1), L.log_softmax(x, 1),
           L.logsumexp(x, 1), L.log_sigmoid(x), L.binary_cross_entropy_with_logits(x, x.sigmoid())]
    got[0].backward()
    monkeypatch.undo()
    for a, b in zip(got, expected): close(a.detach(), b.detach(), torch.float32)

# ---------- drop-in: torch's signatures and argument forms ----------
import inspect, warnings

@pytest.mark.parametrize('ours,theirs', [
    (L.softmax, F.softmax), (L.log_softmax, F.log_softmax), (L.logsumexp, torch.logsumexp), (L.nll_loss, F.nll_loss),
    (L.cross_entropy, F.cross_entropy), (L.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits),
    (L.CrossEntropyLoss, nn.CrossEntropyLoss), (L.NLLLoss, nn.NLLLoss), (L.BCEWithLogitsLoss, nn.BCEWithLogitsLoss)])
def test_signature_is_torchs(ours, theirs):
    "Parameter for parameter: names, order, kinds and defaults"
    if theirs is torch.logsumexp: # a builtin: its signature is in its docstring
        want = [('input', inspect.Parameter.empty), ('dim', inspect.Parameter.empty), ('keepdim', False)]
    else: want = [(p.name, p.default) for p in inspect.signature(theirs).parameters.values()]
    got = [(p.name, p.default) for p in inspect.signature(ours).parameters.values()]
    assert got == want

def test_logsigmoid_takes_one_input():
    assert list(inspect.signature(L.logsigmoid).parameters) == ['input']

def test_deprecated_positional_flags():
    "`cross_entropy(x, y, w, None, 5)` means ignore_index=5, as in torch; `size_average`/`reduce` map to a reduction"
    x, y, w = torch.randn(6, 7), torch.tensor([5, 1, 5, 2, 0, 6]), torch.rand(7)
    close(L.cross_entropy(x, y, w, None, 5), F.cross_entropy(x, y, w, None, 5), torch.float32)
    close(L.nll_loss(x, y, w, None, 5), F.nll_loss(x, y, w, None, 5), torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for sa, rd in ((False, None), (None, False), (True, True), (False, True)):
            close(L.cross_entropy(x, y, w, sa, 5, rd), F.cross_entropy(x, y, w, sa, 5, rd), torch.float32)
            close(L.nll_loss(x, y, None, sa, -100, rd), F.nll_loss(x, y, None, sa, -100, rd), torch.float32)
            t = torch.rand(6, 7)
            close(L.binary_cross_entropy_with_logits(x, t, w, sa, rd), F.binary_cross_entropy_with_logits(x, t, w, sa, rd), torch.float32)
    with pytest.warns(UserWarning, match='deprecated'): L.cross_entropy(x, y, size_average=False)

def test_softmax_implicit_dim():
    for shape in ((4,), (3, 4), (2, 3, 4), (2, 3, 4, 5)):
        x = torch.randn(shape)
        for f, ref in ((L.softmax, F.softmax), (L.log_softmax, F.log_softmax)):
            with pytest.warns(UserWarning, match='Implicit dimension choice'): o = f(x)
            with warnings.catch_warnings(): warnings.simplefilter('ignore'); r = ref(x)
            close(o, r, torch.float32)

@pytest.mark.parametrize('dim', [0, -1, (0,), [0, 1], (1, -1), (-1, 0, 1), [2, 0]])
@pytest.mark.parametrize('keepdim', [False, True])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
def test_logsumexp_dims(dim, keepdim, dtype):
    x = (torch.randn(3, 4, 5, dtype=torch.float64) * 30).to(dtype)
    both(L.logsumexp, torch.logsumexp, x, dim, keepdim=keepdim, dtype=dtype)

@pytest.mark.parametrize('x,dim', [(torch.tensor(2.5), 0), (torch.tensor(2.5), -1), (torch.tensor(-3.), (0,)),
                                   (torch.zeros(2, 0), 1), (torch.zeros(2, 0), (0, 1)), (torch.zeros(0, 3), 1),
                                   (torch.zeros(0, 3), 0), (torch.zeros(3, 0, 2), [0, 2])])
@pytest.mark.parametrize('keepdim', [False, True])
def test_logsumexp_scalar_and_empty(x, dim, keepdim):
    both(L.logsumexp, torch.logsumexp, x, dim, keepdim=keepdim, dtype=torch.float32)

def test_logsumexp_integers_and_bad_dims():
    for t in (torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 2]], dtype=torch.int8), torch.tensor([True, False])):
        close(L.logsumexp(t, 0), torch.logsumexp(t, 0), torch.float32)
    for dim, err in ((2, IndexError), ((0, 0), RuntimeError), ((), RuntimeError)):
        with pytest.raises(err): L.logsumexp(torch.randn(2, 3), dim)
    with pytest.raises(IndexError): torch.logsumexp(torch.randn(2, 3), 2)

@pytest.mark.parametrize('shape,dim', [((0, 5), 1), ((0, 5), 0), ((4, 0), 1), ((4, 0), 0), ((2, 0, 3), 1), ((0,), 0)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
def test_softmax_family_empty(shape, dim, dtype):
    x = torch.randn(shape).to(dtype)
    both(L.softmax, F.softmax, x, dim, dtype=dtype)
    both(L.log_softmax, F.log_softmax, x, dim, dtype=dtype)

@pytest.mark.usefixtures('ce_route')
@pytest.mark.parametrize('red', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('x_shape,t_shape', [((0, 4), (0,)), ((0, 4, 3), (0, 3)), ((2, 4, 0), (2, 0)), ((0, 4, 0), (0, 0))])
def test_zero_size_class_losses(red, x_shape, t_shape):
    "Empty batches and empty spatial dims give torch's value (empty, nan for a mean over nothing, 0 for a sum) and gradients"
    x, t, w = torch.randn(x_shape), torch.zeros(t_shape, dtype=torch.long), torch.rand(4)
    for kw in ({}, dict(weight=w), dict(label_smoothing=0.2)):
        both(L.cross_entropy, F.cross_entropy, x, t, dtype=torch.float32, reduction=red, **kw)
    both(L.cross_entropy, F.cross_entropy, x, torch.rand(x_shape), dtype=torch.float32, reduction=red)
    both(L.nll_loss, F.nll_loss, x, t, dtype=torch.float32, reduction=red, weight=w)

@pytest.mark.usefixtures('ce_route')
def test_zero_classes_is_an_error():
    x, t = torch.zeros(2, 0), torch.zeros(2, dtype=torch.long)
    for f in (L.cross_entropy, L.nll_loss):
        with pytest.raises(IndexError, match='Target 0 is out of bounds for 0 classes'): f(x, t)
    with pytest.raises(IndexError): F.cross_entropy(x, t)

# ---------- the lean route for plain calls, and the general route ----------
def _general(x, t, red):
    "The general route, forced: CrossEntropyFn with no weights, no smoothing, nothing ignored"
    return L.CrossEntropyFn.apply(x, t, (None, None, -100, red, 0.))

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('red', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('N,C', [(1, 2), (7, 3), (50, 10), (256, 10), (1000, 10), (64, 1000), (30_000, 10)]) # the last beyond _CHUNK floats
def test_lean_and_general_routes_agree_bit_for_bit(N, C, red, dtype):
    "Values and gradients, for g = 1 (computed in forward), another g, and a second backward with retain_graph"
    g = torch.Generator().manual_seed(N * C)
    x0, t = torch.randn(N, C, generator=g, dtype=dtype) * 4, torch.randint(0, C, (N,), generator=g)
    w = torch.randn(N if red == 'none' else (), generator=g, dtype=dtype)
    outs = []
    for f in (lambda x: L._CrossEntropyLean.apply(x, t, red), lambda x: _general(x, t, red)):
        x = x0.clone().requires_grad_()
        loss = f(x)
        one = torch.ones_like(loss)
        g1 = torch.autograd.grad(loss, x, one, retain_graph=True)[0]
        gw = torch.autograd.grad(loss, x, w, retain_graph=True)[0]
        g1b = torch.autograd.grad(loss, x, one)[0]
        outs.append((loss.detach(), g1, gw, g1b))
    for a, b in zip(*outs): assert torch.equal(a, b)
    torch.testing.assert_close(outs[0][0], F.cross_entropy(x0, t, reduction=red), **TOL[dtype])

def test_plain_calls_take_the_lean_route(monkeypatch):
    "The common call goes the lean way; weights, smoothing, an ignored target, half precision and big batches go the general way"
    calls = []
    for name, cls in (('lean', L._CrossEntropyLean), ('general', L.CrossEntropyFn)):
        monkeypatch.setattr(cls, 'forward', (lambda f, n: staticmethod(lambda *a: calls.append(n) or f(*a)))(cls.forward, name))
    x, t = torch.randn(50, 10, requires_grad=True), torch.randint(0, 10, (50,))
    t_ign = t.clone(); t_ign[3] = -100
    cases = [((x, t), {}, ['lean']), ((x, t), dict(reduction='sum'), ['lean']), ((x[0], t[0]), {}, ['general']),
             ((x, t_ign), {}, ['lean', 'general']), ((x, t), dict(weight=torch.rand(10)), ['general']),
             ((x, t), dict(label_smoothing=0.1), ['general']), ((x, t), dict(ignore_index=3), ['general']),
             ((x.bfloat16(), t), {}, ['general']), ((torch.randn(30_000, 10), torch.randint(0, 10, (30_000,))), {}, ['general'])]
    for args, kw, route in cases:
        calls.clear(); L.cross_entropy(*args, **kw)
        assert calls == route, (kw, calls)

@pytest.mark.parametrize('bad', [10, -1, -101, 2**40])
def test_lean_route_bad_targets_still_raise(bad):
    "gather's own bounds check sends a bad target to the general route, which raises the clear IndexError"
    x, t = torch.randn(50, 10, requires_grad=True), torch.randint(0, 10, (50,))
    t[17] = bad
    with pytest.raises(IndexError, match=f'Target {bad} is out of bounds for 10 classes'): L.cross_entropy(x, t)
    assert x.grad is None

@pytest.mark.parametrize('red', ['none', 'mean', 'sum'])
def test_gradcheck_lean_route(red):
    x, t = _x(6, 5), torch.tensor([0, 4, 1, 2, 2, 3])
    f = lambda x: L._CrossEntropyLean.apply(x, t, red)
    assert gradcheck(f, (x,)) and gradgradcheck(f, (x,))
