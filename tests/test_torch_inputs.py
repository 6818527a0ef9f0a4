"""miniai.losses on PyTorch's own test inputs: every sample its OpInfo database (`op_db`) feeds the functions miniai
re-implements, and every module input and error input of its ModuleInfo database (`module_db`) for the loss modules.
Values and input gradients must be torch's, or at least as close as torch's to a float64 reference."""
import pytest, torch
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.common_modules import module_db
import miniai.losses as L

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
# PyTorch's names, and miniai's function for each
OPS = {'softmax': L.softmax, 'log_softmax': L.log_softmax, 'logsumexp': L.logsumexp,
       'nn.functional.cross_entropy': L.cross_entropy, 'nn.functional.nll_loss': L.nll_loss,
       'nn.functional.logsigmoid': L.logsigmoid,
       'nn.functional.binary_cross_entropy_with_logits': L.binary_cross_entropy_with_logits}
MODULES = {'CrossEntropyLoss': L.CrossEntropyLoss, 'NLLLoss': L.NLLLoss, 'BCEWithLogitsLoss': L.BCEWithLogitsLoss}
TOL = {torch.float64: dict(rtol=1e-7, atol=1e-7), torch.float32: dict(rtol=1.3e-6, atol=1e-5),
       torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5)}

def _tensors(o):
    "Every tensor in a nest of lists, tuples and dicts, in order"
    if torch.is_tensor(o): return [o]
    if isinstance(o, (list, tuple)): return [t for v in o for t in _tensors(v)]
    if isinstance(o, dict): return [t for v in o.values() for t in _tensors(v)]
    return []

def _map(f, o):
    if torch.is_tensor(o): return f(o)
    if isinstance(o, (list, tuple)): return type(o)(_map(f, v) for v in o)
    if isinstance(o, dict): return {k: _map(f, v) for k, v in o.items()}
    return o

def run(f, args, kwargs, hi=None):
    """f's output and the gradient of a fixed weighting of it with respect to each floating input that requires grad;
    `hi`: the dtype to compute a float64 reference for (inputs in float64, the weighting rounded to `hi`)"""
    def prep(t):
        t = t.detach().clone()
        if hi and t.is_floating_point(): t = t.double()
        return t
    leaves = []
    def leaf(t):
        c = prep(t)
        if t.requires_grad and t.is_floating_point(): c.requires_grad_(); leaves.append(c)
        return c
    args, kwargs = _map(leaf, args), _map(leaf, kwargs)
    out = f(*args, **kwargs)
    if not leaves or not out.requires_grad or not out.numel(): return out.detach(), [None] * len(leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(hi or out.dtype)
    # the grads torch can take: some inputs (nll_loss's weight) have no derivative in torch
    grads = []
    for i, l in enumerate(leaves):
        try: grads.append(torch.autograd.grad(out, l, g.to(out.dtype), retain_graph=True, allow_unused=True)[0])
        except RuntimeError as e:
            if 'not implemented' not in str(e): raise
            grads.append('n/a')
    return out.detach(), grads

def same_or_closer(o, r, truth, dtype, what):
    "o equals r within the dtype's tolerance, or is at least as close as r to the float64 `truth`"
    assert o.dtype == r.dtype and o.shape == r.shape, (what, o.dtype, r.dtype, o.shape, r.shape)
    try: torch.testing.assert_close(o, r, equal_nan=True, **TOL[dtype]); return
    except AssertionError as e: err = e
    o, r, truth = o.double(), r.double(), truth.double()
    fin = truth.isfinite()
    assert torch.equal(o[~fin].isnan(), r[~fin].isnan()) and torch.equal(o[~fin].nan_to_num(), r[~fin].nan_to_num()), (what, err)
    eo, er = (o - truth)[fin].abs(), (r - truth)[fin].abs()
    t = TOL[dtype]
    assert (eo <= er + t['atol'] + t['rtol'] * truth[fin].abs()).all(), (what, eo.max().item(), er.max().item(), err)

def compare(ours, theirs, args, kwargs, dtype, what):
    o, go = run(ours, args, kwargs)
    r, gr = run(theirs, args, kwargs)
    t, gt = run(theirs, args, kwargs, hi=dtype)
    same_or_closer(o, r, t.to(o.dtype) if dtype == torch.float64 else t, dtype, what + ': value')
    for i, (a, b, c) in enumerate(zip(go, gr, gt)):
        if isinstance(b, str) or b is None: continue  # torch has no gradient for this input
        assert a is not None, f'{what}: torch differentiates input {i}, miniai does not'
        same_or_closer(a, b, c, dtype, f'{what}: gradient of input {i}')

def _op_cases():
    for op in op_db:
        if op.name not in OPS: continue
        for dtype in DTYPES:
            samples = list(op.reference_inputs('cpu', dtype, requires_grad=True))
            for i, s in enumerate(samples):
                yield pytest.param(op, dtype, i, id=f'{op.name}{"-" + op.variant_test_name if op.variant_test_name else ""}-{str(dtype)[6:]}-{i}')

_op_samples = {}
def _sample(op, dtype, i):
    key = (op.name, op.variant_test_name, dtype)
    if key not in _op_samples: _op_samples[key] = list(op.reference_inputs('cpu', dtype, requires_grad=True))
    return _op_samples[key][i]

@pytest.mark.usefixtures('ce_route')
@pytest.mark.parametrize('op,dtype,i', list(_op_cases()))
def test_op_db_sample(op, dtype, i):
    s = _sample(op, dtype, i)
    ours = OPS[op.name]
    compare(lambda *a, **k: ours(*a, **k), op.op, (s.input, *s.args), s.kwargs, dtype, f'{op.name} {s}')

def _module_cases():
    for m in module_db:
        name = m.module_cls.__name__
        if name not in MODULES: continue
        for dtype in DTYPES:
            for i, _ in enumerate(m.module_inputs_func(m, device='cpu', dtype=dtype, requires_grad=True, training=True)):
                yield pytest.param(m, dtype, i, id=f'{name}-{str(dtype)[6:]}-{i}')

@pytest.mark.usefixtures('ce_route')
@pytest.mark.parametrize('m,dtype,i', list(_module_cases()))
def test_module_db_input(m, dtype, i):
    mi = list(m.module_inputs_func(m, device='cpu', dtype=dtype, requires_grad=True, training=True))[i]
    c, fw = mi.constructor_input, mi.forward_input
    ours, theirs = MODULES[m.module_cls.__name__](*c.args, **c.kwargs), m.module_cls(*c.args, **c.kwargs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    hi = m.module_cls(*_map(lambda t: t.double() if t.is_floating_point() else t, c.args),
                      **_map(lambda t: t.double() if t.is_floating_point() else t, c.kwargs))
    o, go = run(ours, fw.args, fw.kwargs)
    r, gr = run(theirs, fw.args, fw.kwargs)
    t, gt = run(hi, fw.args, fw.kwargs, hi=dtype)
    what = f'{m.module_cls.__name__}({c.kwargs}) on {[tuple(x.shape) for x in _tensors(fw.args)]}'
    same_or_closer(o, r, t, dtype, what + ': value')
    for a, b, tt in zip(go, gr, gt):
        if b is None or isinstance(b, str): continue
        assert a is not None, what
        same_or_closer(a, b, tt, dtype, what + ': gradient')

def _error_cases():
    for m in module_db:
        name = m.module_cls.__name__
        if name not in MODULES or m.module_error_inputs_func is None: continue
        errs = list(m.module_error_inputs_func(m, device='cpu', dtype=torch.float32, requires_grad=False, training=True))
        for i, e in enumerate(errs): yield pytest.param(m, i, id=f'{name}-error-{i}')

def test_error_inputs_exist():
    assert len(list(_error_cases())) >= 8, 'module_db lost its error inputs for the loss modules'

@pytest.mark.usefixtures('ce_route')
@pytest.mark.parametrize('m,i', list(_error_cases()))
def test_module_db_error(m, i):
    e = list(m.module_error_inputs_func(m, device='cpu', dtype=torch.float32, requires_grad=False, training=True))[i]
    c, fw = e.module_error_input.constructor_input, e.module_error_input.forward_input
    def call(cls):
        mod = cls(*c.args, **c.kwargs)
        return mod(*fw.args, **fw.kwargs)
    # torch raises it...
    with pytest.raises(e.error_type, match=e.error_regex): call(m.module_cls)
    # ...and so do we, with torch's type and a message that says what was expected
    with pytest.raises(e.error_type) as ours: call(MODULES[m.module_cls.__name__])
    assert len(str(ours.value)) > 20, f'the message says too little: {ours.value!r}'
