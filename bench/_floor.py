"""Losses that mark the floor under miniai's cross entropy, for bench/losses.py, bench/training.py and bench/instructions.py:
what no Python route avoids, and, where a C++ compiler and ninja are found, the same loss compiled: what Python costs."""
import shutil, sys
import torch, torch.nn.functional as F
from torch.utils import cpp_extension

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

CE_CPP = r"""
#include <torch/extension.h>
#include <cmath>
using torch::autograd::AutogradContext;
// Mean cross entropy of float32 (N, C) logits, the lean route's formula in one loop: per row m, e = exp(x - m), s,
// loss log s - (x_y - m), and the gradient (e / s - onehot) / N computed in forward, as the lean route does.
struct CE : public torch::autograd::Function<CE> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor t) {
    TORCH_CHECK(x.dim() == 2 && x.numel() > 0 && x.scalar_type() == at::kFloat && x.is_contiguous(), "Expected non-empty contiguous float32 (N, C) logits");
    TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong && t.size(0) == x.size(0), "Expected (N,) int64 targets");
    const int64_t N = x.size(0), C = x.size(1);
    auto g = torch::empty_like(x);
    const float* xp = x.data_ptr<float>(); const int64_t* tp = t.data_ptr<int64_t>(); float* gp = g.data_ptr<float>();
    const float a = 1.f / N;
    double tot = 0;
    for (int64_t i = 0; i < N; i++) {
      const float* r = xp + i * C; float* gr = gp + i * C; const int64_t y = tp[i];
      TORCH_CHECK_INDEX(0 <= y && y < C, "Target ", y, " is out of bounds for ", C, " classes");
      float m = r[0];
      for (int64_t j = 1; j < C; j++) m = std::max(m, r[j]);
      float s = 0;
      for (int64_t j = 0; j < C; j++) { gr[j] = std::exp(r[j] - m); s += gr[j]; }
      tot += std::log(s) - (r[y] - m);
      const float as = a / s;
      for (int64_t j = 0; j < C; j++) gr[j] *= as;
      gr[y] -= a;
    }
    ctx->saved_data["grad"] = g;
    return torch::scalar_tensor(tot / N, x.options());
  }
  static torch::autograd::variable_list backward(AutogradContext* ctx, torch::autograd::variable_list g) {
    return {ctx->saved_data["grad"].toTensor() * g[0], torch::Tensor()};
  }
};
torch::Tensor ce(torch::Tensor x, torch::Tensor t) { return CE::apply(x, t); }
"""

def compiled_ce():
    "The lean route's mean cross entropy as one C++ autograd `Function`, built (about a minute, once) and cached by `load_inline`; None without torch's C++ compiler or ninja, or, saying why, when the build fails"
    if not (shutil.which(cpp_extension.get_cxx_compiler()) and cpp_extension.is_ninja_available()): return None # the compiler load_inline would use ($CXX, else c++)
    try: return cpp_extension.load_inline('miniai_bench_floor_ce', CE_CPP, functions=['ce'], extra_cflags=['-O3']).ce
    except (RuntimeError, OSError, ImportError) as e: # e.g. no Python headers for the compiler
        print(f"bench/_floor.py: no compiled kernel to compare, its build failed: {e}", file=sys.stderr)

FLOOR = {'x.sum(): one op, no Function': lambda x, t: x.sum(),
         'a no-op autograd.Function (x.sum())': NoopFn.apply,
         "6 ops: torch's log_softmax and nll_loss, gradient by hand": SixOpsFn.apply}
if (_ce := compiled_ce()) is not None: FLOOR['the lean formula compiled: one C++ Function, one loop'] = _ce

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
