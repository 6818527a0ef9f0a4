"miniai's linear_cross_entropy against F.linear_cross_entropy's reference path: values, gradients, options, errors, the module."
import itertools, pytest, torch
import torch.nn.functional as F
from torch import nn
import miniai.losses as L
from test_torch_inputs import same_or_closer

DTYPES = [torch.float32, torch.float64, torch.bfloat16]

def problem(N, D, V, dtype, soft=False, bias=True, w=False, ignore=None, seed=0):
    "Features, weight and bias requiring grad, targets (class indices with every third one `ignore`, or probabilities), class weights"
    g = torch.Generator().manual_seed(seed)
    shape = () if N is None else (N,)
    x = torch.randn(*shape, D, generator=g, dtype=torch.float64)
    W = torch.randn(V, D, generator=g, dtype=torch.float64) / D**0.5 * 3
    b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
    if soft: t = torch.softmax(torch.randn(*shape, V, generator=g, dtype=torch.float64) * 2, -1).to(dtype)
    else:
        t = torch.randint(0, V, shape, generator=g)
        if ignore is not None and t.dim(): t[::3] = ignore
    cw = torch.rand(V, generator=g, dtype=torch.float64).to(dtype) if w else None
    return [None if v is None else v.to(dtype) for v in (x, W, b)], t, cw

def run(f, xs, t, hi=None, **kw):
    "Loss and the gradients of a fixed weighting of it for input, weight and bias; `hi`: in float64, the weighting rounded to `hi`"
    leaves = [None if v is None else (v.double() if hi else v).detach().requires_grad_() for v in xs]
    if hi and t.is_floating_point(): t = t.double()
    if hi and kw.get('weight') is not None: kw = {**kw, 'weight': kw['weight'].double()}
    x, W, b = leaves
    out = f(x, W, t, linear_bias=b, **kw)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(hi or out.dtype)
    req = [v for v in leaves if v is not None]
    grads = torch.autograd.grad(out, req, g.to(out.dtype)) if out.numel() else [torch.zeros_like(v) for v in req]
    return out.detach(), list(grads)

LOW_TOL = 2**-6 # bfloat16: relative Frobenius error against float64, four times the 2**-8 of one rounding

def rel_err(o, truth):
    "Relative Frobenius error of `o` against the float64 `truth` (nan where the truth is nan; 0 for an exact zero truth)"
    o, truth = o.double(), truth.double()
    assert torch.equal(o.isnan(), truth.isnan())
    o, truth = o.nan_to_num(), truth.nan_to_num()
    n = truth.norm()
    return ((o - truth).norm() / n).item() if n else (float('inf') if o.any() else 0.)

def compare(xs, t, dtype, **kw):
    "float32 and float64: element by element, the same as torch or closer to float64; bfloat16: the issue's norm, within LOW_TOL"
    o, go = run(L.linear_cross_entropy, xs, t, **kw)
    r, gr = run(F.linear_cross_entropy, xs, t, **kw)
    h, gh = run(F.linear_cross_entropy, xs, t, hi=dtype, **kw)
    if dtype == torch.bfloat16: # rounded to bfloat16 in different places, two routes are not closer element by element
        assert o.dtype == r.dtype and o.shape == r.shape and all(a.dtype == b.dtype for a, b in zip(go, gr))
        for a, c, n in zip([o, *go], [h, *gh], ['value', *'xWb']): assert rel_err(a, c) <= LOW_TOL, (n, kw, rel_err(a, c))
        return
    same_or_closer(o, r, h.to(o.dtype) if dtype == torch.float64 else h, dtype, f'value {kw}')
    for a, b, c, n in zip(go, gr, gh, 'xWb'): same_or_closer(a, b, c, dtype, f'gradient of {n} {kw}')

CASES = list(itertools.product([(37, 16, 50), (None, 16, 50), (5, 8, 3)], [False, True], ['mean', 'sum', 'none']))

@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('shape,soft,red', CASES)
@pytest.mark.parametrize('opts', [dict(), dict(w=True), dict(ls=0.2), dict(w=True, ls=0.1, ignore=2), dict(bias=False, ignore=-100)])
def test_matches_torch(dtype, shape, soft, red, opts, monkeypatch):
    monkeypatch.setattr(L, 'BLOCK_BYTES', 4 * shape[2] * 4) # 4 rows a block: many blocks, and a ragged last one
    monkeypatch.setattr(L, '_LOW_ROWS', 1) # bfloat16's blocks too
    N, D, V = shape
    ignore = None if soft else opts.get('ignore')
    xs, t, cw = problem(N, D, V, dtype, soft=soft, bias=opts.get('bias', True), w=opts.get('w', False), ignore=ignore)
    compare(xs, t, dtype, weight=cw, reduction=red, ignore_index=ignore, label_smoothing=opts.get('ls', 0.0))

@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('red', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('w', [False, True])
def test_all_ignored_and_empty(dtype, red, w):
    "Every target ignored, or no rows at all: torch's nan for a mean over nothing, 0 for a sum, and zero gradients"
    xs, t, cw = problem(6, 8, 10, dtype, w=w)
    compare(xs, torch.full((6,), 4), dtype, weight=cw, reduction=red, ignore_index=4, label_smoothing=0.1)
    xs, t, cw = problem(0, 8, 10, dtype, w=w)
    compare(xs, t, dtype, weight=cw, reduction=red)
    out = L.linear_cross_entropy(*xs[:2], t, reduction=red)
    if red == 'mean': assert out.isnan()

def test_large_logits_and_real_size(monkeypatch):
    "Logits of hundreds: stable; and a shape with thousands of classes and several blocks"
    xs, t, _ = problem(64, 32, 3000, torch.float32, seed=3)
    xs = [v * 30 if v is not None else v for v in xs]
    monkeypatch.setattr(L, 'BLOCK_BYTES', 1 << 20)
    assert L.block_rows(3000) == (1 << 20) // 12000
    compare(xs, t, torch.float32, label_smoothing=0.1)

def test_block_rows_come_from_the_budget():
    for V in (10, 1000, 32768, 131072, 10**7):
        r = L.block_rows(V)
        assert r >= 1 and (r * V * 4 <= L.BLOCK_BYTES or r == 1)
        assert (r + 1) * V * 4 > L.BLOCK_BYTES
    assert L.block_rows(1000, budget=4000 * 7) == 7

def test_no_gradient_work_without_gradients(monkeypatch):
    "Inference and torch.no_grad: the blocks compute losses only; the gradients are computed only for what needs them"
    seen = []
    real = L._lce_blocks
    def spy(*a, **k): seen.append(a[-1]); return real(*a, **k)
    monkeypatch.setattr(L, '_lce_blocks', spy)
    x, W, t = torch.randn(4, 3), torch.randn(7, 3), torch.tensor([0, 1, 6, 2])
    L.linear_cross_entropy(x, W, t)
    with torch.no_grad(): L.linear_cross_entropy(x.requires_grad_(), W.requires_grad_(), t)
    L.linear_cross_entropy(x.detach(), W, t).backward()
    assert seen == [(False, False, False), (False, False, False), (False, True, False)]

@pytest.mark.parametrize('red', ['mean', 'sum', 'none'])
def test_second_backward_with_retain_graph(red):
    xs, t, cw = problem(9, 5, 11, torch.float32, w=True)
    x, W, b = (v.detach().requires_grad_() for v in xs)
    loss = L.linear_cross_entropy(x, W, t, linear_bias=b, weight=cw, reduction=red, label_smoothing=0.1)
    g = torch.rand(loss.shape) if red == 'none' else torch.tensor(2.5)
    first = torch.autograd.grad(loss, (x, W, b), g, retain_graph=True)
    second = torch.autograd.grad(loss, (x, W, b), g)
    ref = torch.autograd.grad(F.linear_cross_entropy(x, W, t, linear_bias=b, weight=cw, reduction=red, label_smoothing=0.1), (x, W, b), g)
    for a, c, r in zip(first, second, ref):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        torch.testing.assert_close(a, r)

def test_gradcheck(monkeypatch):
    monkeypatch.setattr(L, 'BLOCK_BYTES', 4 * 20 * 3)
    xs, t, cw = problem(7, 4, 20, torch.float64, w=True, ignore=5)
    for kw in (dict(), dict(weight=cw, ignore_index=5, label_smoothing=0.3), dict(reduction='none')):
        assert torch.autograd.gradcheck(lambda x, W, b: L.linear_cross_entropy(x, W, t, linear_bias=b, **kw),
                                        tuple(v.detach().requires_grad_() for v in xs))

x3, W5, t3 = torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 1, 2])
BAD = {
    'target out of range': (lambda f: f(x3, W5, torch.tensor([0, 5, 1])), IndexError, r'Target 5 is out of bounds for 5 classes'),
    'negative target': (lambda f: f(x3, W5, torch.tensor([0, -3, 1])), IndexError, r'Target -3 is out of bounds'),
    'in_features do not match': (lambda f: f(torch.randn(3, 6), W5, t3), RuntimeError, r'input must have shape \(N, 4\)'),
    'batch sizes do not match': (lambda f: f(x3, W5, torch.tensor([0, 1])), ValueError, r'batch_size \(3\) to match target batch_size \(2\)'),
    'bias of the wrong shape': (lambda f: f(x3, W5, t3, linear_bias=torch.zeros(4)), RuntimeError, r'linear_bias must have shape \(5,\)'),
    'class weight of the wrong shape': (lambda f: f(x3, W5, t3, weight=torch.ones(3)), RuntimeError, r'all 5 classes.*shape: \[3\]'),
    'label_smoothing above 1': (lambda f: f(x3, W5, t3, label_smoothing=1.5), RuntimeError, r'between 0\.0 and 1\.0\. Got: 1\.5'),
    'unknown reduction': (lambda f: f(x3, W5, t3, reduction='avg'), ValueError, r'avg is not a valid value for reduction'),
    'ignore_index with probabilities': (lambda f: f(x3, W5, torch.rand(3, 5), ignore_index=1), RuntimeError, r'ignore_index is not supported'),
    'float targets of the wrong shape': (lambda f: f(x3, W5, torch.rand(3)), RuntimeError, r'torch\.int64'),
}

@pytest.mark.parametrize('name', list(BAD))
def test_errors_are_torchs(name):
    call, typ, msg = BAD[name]
    with pytest.raises(typ): call(F.linear_cross_entropy)
    with pytest.raises(typ, match=msg): call(L.linear_cross_entropy)

def test_errors_torch_lets_through():
    "Where torch returns a silent number (or a gradient we do not compute), we raise"
    with pytest.raises(RuntimeError, match=r'Got: -0\.1'): L.linear_cross_entropy(x3, W5, t3, label_smoothing=-0.1)
    with pytest.raises(RuntimeError, match='no gradient for the target'): L.linear_cross_entropy(x3, W5, torch.rand(3, 5).requires_grad_())
    with pytest.raises(NotImplementedError, match='2-D'): L.linear_cross_entropy(x3, torch.randn(5, 2, 4), t3)

def test_signature_is_torchs():
    import inspect
    ours = [(p.name, p.kind, p.default) for p in inspect.signature(L.linear_cross_entropy).parameters.values()]
    theirs = [(p.name, p.kind, p.default) for p in inspect.signature(F.linear_cross_entropy).parameters.values()]
    assert ours == theirs[:-1] and theirs[-1][0] == 'options' # all but the chunking options of torch's own chunked path

@pytest.mark.parametrize('bias', [False, True])
def test_module_state_dict_is_interchangeable(bias):
    cw = torch.rand(10)
    ours, theirs = L.LinearCrossEntropyLoss(6, 10, bias=bias, weight=cw, label_smoothing=0.1), nn.LinearCrossEntropyLoss(6, 10, bias=bias, weight=cw, label_smoothing=0.1)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    x, t = torch.randn(8, 6), torch.randint(0, 10, (8,))
    torch.testing.assert_close(ours(x, t), theirs(x, t))
    ours2 = L.LinearCrossEntropyLoss(6, 10, bias=bias, weight=cw, label_smoothing=0.1)
    ours2.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours2(x, t), theirs(x, t))
    m = L.LinearCrossEntropyLoss(6, 10, dtype=torch.float64, reduction='sum', ignore_index=3)
    assert m.linear.weight.dtype == torch.float64 and m.linear.bias is None
    with pytest.raises(ValueError, match='not a valid value for reduction'): L.LinearCrossEntropyLoss(6, 10, reduction='avg')

def test_module_trains_in_fit():
    "The head as the loss: fit trains features and head together, and the loss falls"
    from miniai.training import Dataset, fit, get_dls, accuracy
    torch.manual_seed(0)
    x = torch.randn(600, 10); y = (x[:, :3].argmax(1) * 2 + (x[:, 3] > 0)).long()
    model, head = nn.Sequential(nn.Linear(10, 32), nn.ReLU()), L.LinearCrossEntropyLoss(32, 6, bias=True)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.3)
    res = fit(8, model, head, opt, *get_dls(Dataset(x[:500], y[:500]), Dataset(x[500:], y[500:]), 20), progress=False,
              metric=lambda h, yb: accuracy(head.linear(h), yb))
    assert res.history.epochs[-1]['train_loss'] < 0.5 * res.history.epochs[0]['train_loss'] and res[1] > 0.8

def lse_in_bf16(x, W, t):
    "A wrong formula for bfloat16: the sum of exponentials added up in bfloat16, one class at a time (the loss only)"
    z = (x @ W.t()).float(); m = z.amax(1, keepdim=True)
    s = torch.zeros(len(z), 1, dtype=torch.bfloat16)
    for c in (z - m).exp().bfloat16().t(): s += c[:, None]
    return (s.float().log() + m - z.gather(1, t[:, None])).mean()

@pytest.mark.parametrize('scale', [1, 8])
def test_bfloat16_accuracy(scale, monkeypatch):
    "Against float64 on the same bfloat16 inputs, several blocks: within the tolerance a float32 route also meets and a bfloat16 log-sum-exp does not"
    monkeypatch.setattr(L, '_LOW_ROWS', 64)
    monkeypatch.setattr(L, 'BLOCK_BYTES', 64 * 4096 * 2) # 64 rows of bfloat16 logits: 4 blocks
    g = torch.Generator().manual_seed(0)
    x, W = torch.randn(256, 64, generator=g).bfloat16(), (torch.randn(4096, 64, generator=g) * scale / 8).bfloat16()
    t = torch.randint(0, 4096, (256,), generator=g)
    def run(dtype, f=L.linear_cross_entropy):
        xs, Ws = x.to(dtype, copy=True).requires_grad_(), W.to(dtype, copy=True).requires_grad_()
        loss = f(xs, Ws, t); loss.backward()
        return loss.detach(), xs.grad, Ws.grad
    truth = run(torch.float64, F.linear_cross_entropy)
    tol = [2**-8, *[2**-9 * (1 + scale * 4)] * 2] # the loss: one rounding; gradients: rounding of logits of up to ~4 scale
    for dtype in (torch.bfloat16, torch.float32):
        ours = run(dtype)
        assert ours[0].dtype == dtype and ours[2].dtype == dtype
        for o, h, tl, n in zip(ours, truth, tol, ['loss', 'dx', 'dW']): assert rel_err(o, h) <= tl, (dtype, n, rel_err(o, h), tl)
    if scale == 1: assert rel_err(lse_in_bf16(x, W, t), truth[0]) > tol[0] # thousands of like terms: a bfloat16 sum stalls

def test_bfloat16_takes_its_route_and_others_do_not(monkeypatch):
    "bfloat16 runs the low-precision blocks; float32, float64, float16 on the CPU and mixed dtypes the float32/64 blocks, as before"
    seen = []
    for name in ('_lce_blocks', '_lce_blocks_low'):
        real = getattr(L, name)
        monkeypatch.setattr(L, name, lambda *a, real=real, name=name: seen.append(name) or real(*a))
    x, W, t = torch.randn(5, 3), torch.randn(7, 3), torch.tensor([0, 1, 6, 2, 2])
    for xd, Wd in [(torch.bfloat16,)*2, (torch.float32,)*2, (torch.float64,)*2, (torch.float16,)*2, (torch.bfloat16, torch.float32)]:
        L.linear_cross_entropy(x.to(xd), W.to(Wd), t)
    assert seen == ['_lce_blocks_low'] + ['_lce_blocks'] * 4
    x, W = x.half(), W.half() # float16 on the CPU: computed in float32, as before
    torch.testing.assert_close(L.linear_cross_entropy(x, W, t), L.linear_cross_entropy(x.float(), W.float(), t).half(), rtol=0, atol=0)

@pytest.mark.parametrize('module', [False, True])
def test_autocast_casts_as_F_linear(module):
    "Under CPU autocast: the matmuls in bfloat16, the loss in float32 as torch's, float32 gradients through the casts"
    torch.manual_seed(0)
    x, t = torch.randn(40, 16, requires_grad=True), torch.randint(0, 300, (40,))
    head = L.LinearCrossEntropyLoss(16, 300, bias=True, label_smoothing=0.1)
    f = head if module else lambda x, t: L.linear_cross_entropy(x, head.linear.weight, t, linear_bias=head.linear.bias, label_smoothing=0.1)
    with torch.autocast('cpu', dtype=torch.bfloat16): loss = f(x, t)
    with torch.autocast('cpu', dtype=torch.bfloat16): ref = F.linear_cross_entropy(x, head.linear.weight, t, linear_bias=head.linear.bias, label_smoothing=0.1)
    assert loss.dtype == ref.dtype == torch.float32
    loss.backward()
    assert x.grad.dtype == head.linear.weight.grad.dtype == head.linear.bias.grad.dtype == torch.float32
    low = L.linear_cross_entropy(*(v.detach().bfloat16().requires_grad_() for v in (x, head.linear.weight)), t,
                                 linear_bias=head.linear.bias.detach().bfloat16().requires_grad_(), label_smoothing=0.1)
    assert loss.bfloat16() == low # the bfloat16 route, its float32 loss not yet rounded
    torch.testing.assert_close(loss, ref, rtol=2**-7, atol=0)
