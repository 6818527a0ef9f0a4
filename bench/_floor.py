"Losses that mark the floor under miniai's cross entropy, for bench/losses.py and bench/training.py: what no Python route avoids."
import torch, torch.nn.functional as F

class NoopFn(torch.autograd.Function):
    "An autograd Function that does one op each way, `x.sum()` and its gradient: what any Python Function costs"
    @staticmethod
    def forward(ctx, x, t):
        ctx.shape = x.shape
        return x.sum()
    @staticmethod
    def backward(ctx, g): return g.expand(ctx.shape), None

class SixOpsFn(torch.autograd.Function):
    "Mean cross entropy in 6 ops: PyTorch's `log_softmax` and `nll_loss` kernels for the value, (p - onehot) / N by hand"
    @staticmethod
    def forward(ctx, x, t):
        lp = torch.log_softmax(x, 1)
        loss = F.nll_loss(lp, t)
        ctx.grad = lp.exp_().scatter_(1, t.unsqueeze(1), -1., reduce='add').div_(len(x)) # the gradient for g = 1
        return loss
    @staticmethod
    def backward(ctx, g): return ctx.grad.mul_(g), None

FLOOR = {'x.sum(): one op, no Function': lambda x, t: x.sum(),
         'a no-op autograd.Function (x.sum())': NoopFn.apply,
         "6 ops: torch's log_softmax and nll_loss, gradient by hand": SixOpsFn.apply}

def lean_ops(x, t):
    """Each of the lean route's 13 forward ops (reduction 'mean', its gradient included) alone, on tensors like its own,
    with no autograd: {name: (op, reset)}. An in-place op runs on a buffer that `reset` first copies its input into
    (else repeated exp_ or mul_ would reach inf or subnormals); count or time `reset` alone and take it off."""
    x, n = x.detach(), len(x)
    tc, m = t.unsqueeze(1), x.amax(1, keepdim=True)
    e = x - m
    d, p = e.gather(1, tc), e.exp()
    s = p.sum(1, keepdim=True)
    ls, a = s.log(), torch.ones(()) / n
    loss, r, na = ls - d, a / s, (-a).expand(n, 1)
    tot, nt = loss.sum(), torch.tensor(float(n))
    b, bl, bt = torch.empty_like(e), torch.empty_like(ls), torch.empty_like(tot) # buffers of the in-place ops
    return {'tc = t.unsqueeze(1)': (lambda: t.unsqueeze(1), None),
            'm = x.amax(1, keepdim=True)': (lambda: x.amax(1, keepdim=True), None),
            'e = x - m': (lambda: x - m, None),
            'd = e.gather(1, tc)': (lambda: e.gather(1, tc), None),
            'e.exp_()': (lambda: b.exp_(), lambda: b.copy_(e)),
            's = e.sum(1, keepdim=True)': (lambda: p.sum(1, keepdim=True), None),
            's.log()': (lambda: s.log(), None),
            'loss = log s .sub_(d)': (lambda: bl.sub_(d), lambda: bl.copy_(ls)),
            'a / s': (lambda: a / s, None),
            'e.mul_(a / s)': (lambda: b.mul_(r), lambda: b.copy_(p)),
            '.scatter_add_(1, tc, -a)': (lambda: b.scatter_add_(1, tc, na), lambda: b.copy_(p)),
            'loss.sum()': (lambda: loss.sum(), None),
            '.div_(n)': (lambda: bt.div_(nt), lambda: bt.copy_(tot))}
