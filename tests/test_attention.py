"""`attention`, both of its routes (SDPA and the plain one of two products and a masked softmax): the masked-softmax formula
in float64 and bfloat16, forward and backward, causality, dropout of the weights, and the route each dtype takes."""
import math
import pytest, torch
import torch.nn.functional as F
from miniai.gpt import GPT, SelfAttention, attention, attention_route

ROUTES = ['sdpa', 'plain']

def formula(q, k, v):
    "softmax(q k^T / sqrt(d), future masked to -inf) v, in float64"
    q, k, v = (t.double() for t in (q, k, v))
    T, d = q.shape[-2:]
    att = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float('-inf'))
    return att.softmax(-1) @ v

def qkv(dtype, seed=0, shape=(3, 2, 13, 8)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).mul(2).to(dtype).requires_grad_() for _ in range(3)]

def grads(f, q, k, v, g):
    out = f(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), g.to(out.dtype)))

@pytest.mark.parametrize('route', ROUTES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16])
def test_route_is_the_formula_forward_and_backward(route, dtype):
    """Output and the gradients of q, k, v against the float64 formula on the same (rounded) inputs: to rounding in float64
    and float32; in bfloat16 (8 bits of mantissa) within 1.5% in norm, where both routes measure under 0.8%"""
    for seed in range(3):
        q, k, v = qkv(dtype, seed)
        g = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
        ours = grads(lambda *a: attention(*a, route=route), q, k, v, g)
        ref = grads(formula, *(t.detach().double().requires_grad_() for t in (q, k, v)), g)
        for name, a, b in zip(['out', 'dq', 'dk', 'dv'], ours, ref):
            assert a.dtype == dtype, name
            if dtype == torch.bfloat16: assert (a.double() - b).norm() < 0.015 * b.norm(), name
            else: torch.testing.assert_close(a.double(), b, msg=name, **({} if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)))

@pytest.mark.parametrize('route', ROUTES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_no_output_sees_the_future(route, dtype):
    "Changing the tokens from position 7 on changes no output before 7, and changes the outputs from 7 on"
    q, k, v = (t.detach() for t in qkv(dtype))
    q2, k2, v2 = (t.clone() for t in (q, k, v))
    for t in (q2, k2, v2): t[..., 7:, :] = torch.randn(t[..., 7:, :].shape).to(dtype)
    a, b = attention(q, k, v, route=route), attention(q2, k2, v2, route=route)
    assert torch.equal(a[..., :7, :], b[..., :7, :])
    assert not torch.allclose(a[..., 7:, :], b[..., 7:, :])

@pytest.mark.parametrize('route', ROUTES)
def test_dropout_of_the_weights(route):
    "p > 0 drops weights (rescaling the rest): one output is far from p = 0's (about 100% in norm), the mean of 400 within 10% (5% measured)"
    q, k, v = (t.detach() for t in qkv(torch.float32))
    torch.manual_seed(0)
    a, b, none = attention(q, k, v, 0.5, route=route), attention(q, k, v, 0.5, route=route), attention(q, k, v, 0., route=route)
    assert (a - none).norm() > 0.5 * none.norm() and not torch.allclose(a, b)
    mean = sum(attention(q, k, v, 0.5, route=route) for _ in range(400)) / 400 # dropout is unbiased: E[out] = out without it
    assert (mean - none).norm() < 0.1 * none.norm()

@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_self_attention_drops_in_training_only(dtype):
    "SelfAttention: in training mode two calls differ (dropout), in eval mode they are equal and match p = 0"
    torch.manual_seed(0)
    a = SelfAttention(32, 4, dropout=0.3).to(dtype)
    x = torch.randn(2, 9, 32, dtype=dtype)
    assert not torch.equal(a(x), a(x))
    a.eval()
    e = a(x)
    assert torch.equal(e, a(x))
    a0 = SelfAttention(32, 4).to(dtype).eval(); a0.load_state_dict(a.state_dict())
    assert torch.equal(e, a0(x))

def test_route_choice():
    "bfloat16 on the CPU takes the plain route (SDPA's CPU kernel is slow there), every other dtype SDPA; a bad route is named"
    assert attention_route(torch.zeros(1, dtype=torch.bfloat16)) == 'plain'
    for dt in (torch.float32, torch.float64, torch.float16): assert attention_route(torch.zeros(1, dtype=dt)) == 'sdpa'
    q = torch.zeros(1, 1, 2, 4)
    with pytest.raises(ValueError, match="route must be 'sdpa' or 'plain', got 'flash'"): attention(q, q, q, route='flash')

def test_gpt_under_autocast_takes_the_plain_route_and_matches_sdpa(monkeypatch):
    "Under bfloat16 autocast the GPT's attention gets bfloat16 queries, so the plain route; its loss and gradients match SDPA's"
    import miniai.gpt as gpt
    torch.manual_seed(0)
    m = GPT(65, 32, n_layer=2, n_head=2, n_embd=64)
    x, y = torch.randint(65, (4, 32)), torch.randint(65, (4, 32))
    seen, orig = [], gpt.attention_route
    monkeypatch.setattr(gpt, 'attention_route', lambda q: seen.append(orig(q)) or seen[-1])
    def run():
        with torch.autocast('cpu', dtype=torch.bfloat16): loss = m.loss(m(x), y)
        gs = torch.autograd.grad(loss, list(m.parameters()))
        return loss, gs
    plain = run()
    assert seen == ['plain', 'plain']
    monkeypatch.setattr(gpt, 'attention_route', lambda q: 'sdpa')
    sdpa = run()
    torch.testing.assert_close(plain[0], sdpa[0], rtol=0.01, atol=0)
    for a, b in zip(plain[1], sdpa[1]): assert (a - b).norm() <= 0.05 * b.norm()
