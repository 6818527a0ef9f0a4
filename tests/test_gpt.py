"""The GPT of notebook 9: Tiny Shakespeare, the vocabulary and the windows, the model against plain PyTorch, sampling,
and `miniai-gpt` as a user runs it: flags checked before any work, and a run killed with SIGKILL that resumes bit for bit."""
import math, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
from miniai.datasets import DataFileError, data_dir
from miniai.gpt import (GPT, SHAKESPEARE_SHA256, CharVocab, SelfAttention, SeqChunks, Windows, generate, get_shakespeare,
                        gpt_optimizer, sample_gpt, split_data, warmup_cosine)
from miniai.training import fit, TrainCB, History
from miniai.callbacks import Checkpoint, CheckpointError, GradAccum
from test_datasets import _Server

NO_NET = 'http://127.0.0.1:9/input.txt' # the discard port: nothing listens, so a download fails at once

@pytest.fixture(scope='session')
def text():
    "The real Tiny Shakespeare, from `data_dir()` ($MINIAI_DATA: CI points it at ../shared/data)"
    if not (data_dir()/'tinyshakespeare.txt').exists():
        msg = f"no tinyshakespeare.txt in {data_dir()}: set MINIAI_DATA to a folder holding it"
        if os.environ.get('CI'): pytest.fail(msg)
        pytest.skip(msg)
    return get_shakespeare()

# ---------- the data ----------
def test_the_real_file(text):
    assert len(text) == 1_115_394 and text.startswith('First Citizen:\nBefore we proceed any further, hear me speak.')
    v = CharVocab(text)
    assert len(v) == 65 and v.chars[:2] == ['\n', ' '] and v.decode(v.encode(text[:1000])) == text[:1000]
    tr, va = split_data(v.encode(text))
    assert (len(tr), len(va)) == (1_003_854, 111_540) and torch.equal(torch.cat([tr, va]), v.encode(text))

def test_a_file_with_another_hash_is_refused(tmp_path):
    (tmp_path/'tinyshakespeare.txt').write_text('To be, or not to be\n')
    with pytest.raises(DataFileError, match=f"its SHA-256 is .*, expected {SHAKESPEARE_SHA256}. Delete it to download it again"):
        get_shakespeare(tmp_path, url=NO_NET)
    assert (tmp_path/'tinyshakespeare.txt').read_text() == 'To be, or not to be\n', 'the file is kept'

def test_no_file_and_no_network_says_where_and_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError) as e: get_shakespeare(tmp_path/'nowhere', url=NO_NET)
    for part in (f"tinyshakespeare.txt is not in {tmp_path/'nowhere'}", NO_NET, 'Connection refused', 'set MINIAI_DATA'): assert part in str(e.value)
    assert not (tmp_path/'nowhere').exists()

def test_download_checks_the_hash_before_keeping_the_file(text, tmp_path):
    with _Server(b'<html>rate limited</html>') as srv:
        with pytest.raises(DataFileError, match='nothing was saved'): get_shakespeare(tmp_path, url=srv.url)
    assert list(tmp_path.iterdir()) == []
    with _Server(text.encode()) as srv:
        assert get_shakespeare(tmp_path, url=srv.url) == text and get_shakespeare(tmp_path, url=srv.url) == text
        assert srv.hits == 1, 'the second call uses the file on disk'

def test_vocabulary_errors_name_the_characters(text):
    v = CharVocab(text)
    with pytest.raises(ValueError, match="'ßé' not in the vocabulary"): v.encode('straße café')

# ---------- batches ----------
def test_windows_are_shifted_by_one_and_resume_without_drawing_again():
    data = torch.arange(1000)
    full = list(Windows(data, 4, 16, n_batches=10, generator=torch.Generator().manual_seed(3)))
    assert len(full) == 10 and all(torch.equal(x + 1, y) and x.shape == (4, 16) for x, y in full)
    assert all(x.min() >= 0 and y.max() < 1000 for x, y in full)
    g = torch.Generator().manual_seed(3)
    resumed = list(Windows(data, 4, 16, n_batches=10, generator=g).batches(skip=7))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[7:], resumed)) and len(resumed) == 3
    with pytest.raises(ValueError, match='longer than a window'): Windows(data[:16], 4, 16, 1)
    with pytest.raises(ValueError, match='n_batches must be at least 1'): Windows(data, 4, 16, 0)

@pytest.mark.parametrize('n,bs,block_size', [(111_540, 64, 64), (100, 3, 7), (8, 5, 7), (9, 2, 8), (2, 1, 64)])
def test_chunks_make_every_token_a_target_once(n, bs, block_size):
    data = torch.randint(65, (n,))
    ch = SeqChunks(data, bs, block_size)
    batches = list(ch)
    assert len(batches) == len(ch) and all(x.shape == y.shape and x.shape[1] <= block_size and len(x) <= bs for x, y in batches)
    assert torch.equal(torch.cat([y.flatten() for _, y in batches]), data[1:])
    assert torch.equal(torch.cat([x.flatten() for x, _ in batches]), data[:-1])

# ---------- the model ----------
def attention_naive(q, k, v):
    T, d = q.shape[-2:]
    att = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float('-inf'))
    return att.softmax(-1) @ v

@pytest.mark.parametrize('n_head', [1, 2, 8])
def test_attention_is_the_formula_and_causal(n_head):
    torch.manual_seed(n_head)
    a = SelfAttention(32, n_head, dropout=0.5).eval()
    x = torch.randn(3, 11, 32, dtype=torch.float64); a.double()
    q, k, v = (t.view(3, 11, n_head, 32 // n_head).transpose(1, 2) for t in a.qkv(x).split(32, dim=2))
    torch.testing.assert_close(a(x), a.proj(attention_naive(q, k, v).transpose(1, 2).reshape(3, 11, 32)))
    x2 = x.clone(); x2[:, 5:] = torch.randn(3, 6, 32, dtype=torch.float64)
    torch.testing.assert_close(a(x2)[:, :5], a(x)[:, :5])
    assert not torch.allclose(a(x2)[:, 5:], a(x)[:, 5:])
    with pytest.raises(ValueError, match=r'n_embd \(32\) must be a multiple of n_head \(3\)'): SelfAttention(32, 3)

def small_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(65, 16, **{**dict(n_layer=2, n_head=2, n_embd=32), **kw})

def test_gpt_loss_and_gradients_are_those_of_the_logits():
    "The head never makes the logits; its loss and every gradient equal F.cross_entropy's on the logits (float64)"
    m = small_gpt().double()
    x, y = torch.randint(65, (4, 16)), torch.randint(65, (4, 16))
    loss = m.loss(m(x), y); loss.backward()
    ours = {n: p.grad.clone() for n, p in m.named_parameters()}; m.zero_grad()
    ref = F.cross_entropy(m.logits(m(x)).flatten(0, 1), y.flatten()); ref.backward()
    torch.testing.assert_close(loss, ref)
    for n, p in m.named_parameters(): torch.testing.assert_close(ours[n], p.grad, msg=n)
    assert m.head.linear.weight is m.wte.weight and len(list(m.parameters())) == len(m.state_dict()) - 2 # the tied copy and the config

def test_gpt_under_bfloat16_autocast_is_close_to_float32():
    m = small_gpt()
    x, y = torch.randint(65, (8, 16)), torch.randint(65, (8, 16))
    ref = m.loss(m(x), y)
    with torch.autocast('cpu', dtype=torch.bfloat16): low = m.loss(m(x), y)
    assert low.dtype == torch.float32 and abs(low.item() - ref.item()) < 0.02 * ref.item()

def test_parameters_and_initial_loss(text):
    m = GPT(65, 64)
    assert sum(p.numel() for p in m.parameters()) == 65*128 + 64*128 + 4*12*128*128 + 9*128
    v = CharVocab(text); tr, _ = split_data(v.encode(text))
    xb, yb = next(iter(Windows(tr, 12, 64, 1, generator=torch.Generator().manual_seed(0))))
    assert abs(m.loss(m(xb), yb).item() - math.log(65)) < 0.05 # every character about equally likely
    with pytest.raises(ValueError, match='a sequence of 65 tokens is longer than the block size 64'): m(torch.zeros(1, 65, dtype=torch.long))

def test_weights_of_another_configuration_are_refused():
    a, b = small_gpt(), small_gpt(n_head=4) # the same shapes, other heads
    with pytest.raises(ValueError, match="n_head': 4"): a.load_state_dict(b.state_dict())

def test_generate_draws_from_the_last_position_only():
    m = small_gpt().train()
    shapes = []
    logits = m.logits
    m.logits = lambda h: shapes.append(tuple(h.shape)) or logits(h)
    rng = torch.get_rng_state()
    out = generate(m, torch.zeros(2, 3, dtype=torch.long), 20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 23) and set(shapes) == {(2, 32)}, 'the logits of one position per sequence'
    assert torch.equal(torch.get_rng_state(), rng) and m.training, 'no global random draw; the mode is put back'
    again = generate(m, torch.zeros(2, 3, dtype=torch.long), 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    greedy = generate(m, torch.zeros(1, 3, dtype=torch.long), 5, top_k=1)
    x = torch.zeros(1, 3, dtype=torch.long)
    for _ in range(5): x = torch.cat([x, logits(m.eval()(x)[:, -1]).argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, x)
    with pytest.raises(ValueError, match='temperature must be above 0'): generate(m, x, 1, temperature=0)

def test_schedule_is_nanogpts():
    m = small_gpt(); opt = gpt_optimizer(m, 1e-3)
    f = warmup_cosine(opt, 2000, 100, 1e-4).lr_lambdas[0]
    def nano(it): # nanoGPT's get_lr
        if it < 100: return 1e-3 * (it + 1) / 101
        r = (it - 100) / 1900
        return 1e-4 + 0.5 * (1 + math.cos(math.pi * r)) * (1e-3 - 1e-4)
    for it in (0, 50, 99, 100, 101, 1000, 1999, 2000): assert math.isclose(1e-3 * f(it), nano(it), rel_tol=1e-12)
    assert [g['weight_decay'] for g in opt.param_groups] == [0.1, 0.]
    assert all(p.dim() >= 2 for p in opt.param_groups[0]['params']) and all(p.dim() < 2 for p in opt.param_groups[1]['params'])

# ---------- gradient accumulation on the GPT ----------
@pytest.mark.parametrize('k', [2, 3, 12])
def test_accumulated_step_equals_the_big_batch(k):
    "One step over k micro-batches: the gradient and loss of the whole batch to float32 rounding, and after 5 steps nearly the same weights"
    data = torch.randint(65, (5000,), generator=torch.Generator().manual_seed(k))
    def run(cbs, n_batches):
        # SGD, not AdamW: Adam divides by the root of the squared gradients, so a weight whose gradient is near 0 moves by
        # about lr whatever its sign, and float32 rounding of that sign would show as a difference of lr in the weights
        m = small_gpt(); o = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9); grads = []
        class G(TrainCB):
            def step(self, run): grads.append([p.grad.clone() for p in run.opt.param_groups[0]['params']]); run.opt.step()
        hist = fit(1, m, m.loss, o, Windows(data, 12, 16, n_batches, generator=torch.Generator().manual_seed(0)), SeqChunks(data[:100], 4, 16),
                   metric=m.accuracy, cbs=cbs, defaults=[G(), History()]).history
        return m, grads, hist.batch_losses
    (m1, g1, l1), (m2, g2, l2) = run([], 5), run([GradAccum(k)], 5)
    for a, b in zip(g1[0], g2[0]): torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    assert math.isclose(l1[0], l2[0], rel_tol=1e-6)
    for a, b in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)

# ---------- the command ----------
def run(cmd, timeout=300, **env):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, 'OMP_NUM_THREADS': '1', **env})
    return p.returncode, p.stdout, p.stderr

def error_lines(err): return [l for l in err.splitlines() if 'error:' in l]

USAGE = {
    'steps 0': (['--steps', '0'], 'argument --steps: must be at least 1, got 0'),
    'not a multiple': (['--steps', '100', '--eval-every', '30'], 'argument --steps: must be a multiple of --eval-every (30), got 100'),
    'heads': (['--n-embd', '100', '--n-head', '3'], 'argument --n-embd: must be a multiple of --n-head (3), got 100'),
    'block, the old spelling': (['--block', '0'], 'argument --block-size: must be at least 1, got 0'),
    'lr 0': (['--lr', '0'], 'argument --lr: must be a finite number above 0, got 0.0'),
    'min lr': (['--min-lr', '0.1'], 'argument --min-lr: must lie between 0 and --lr (0.001), got 0.1'),
    'dropout 1': (['--dropout', '1'], 'argument --dropout: must lie in [0, 1), got 1.0'),
    'accum > bs': (['--accum', '13'], 'argument --accum: must be at most --bs (12), got 13'),
    'every without checkpoint': (['--every', '10'], 'argument --every: needs --checkpoint and a count of at least 1, got 10 without --checkpoint'),
    'sample without checkpoint': (['--sample', 'ROMEO:'], "argument --sample: needs --checkpoint with a file to sample from, got None"),
    'out in /proc': (['--out', '/proc/nope'], 'argument --out: cannot write to /proc/nope'),
    'bf16 maybe': (['--bf16', 'maybe'], "argument --bf16: invalid bool_arg value: 'maybe'"),
    'no data': (['--data', '{dir}/nowhere'], 'tinyshakespeare.txt is not in {dir}/nowhere'),
}

@pytest.mark.parametrize('case', list(USAGE))
def test_usage_errors_fail_early_in_one_line(tmp_path, case, text):
    flags, msg = (s.replace('{dir}', str(tmp_path)) for s in USAGE[case][0]), USAGE[case][1].replace('{dir}', str(tmp_path))
    flags = list(flags)
    code, out, err = run(['miniai-gpt', *flags, *([] if '--out' in flags else ['--out', str(tmp_path/'out')])], timeout=60, MINIAI_SHAKESPEARE_URL=NO_NET)
    lines = error_lines(err)
    assert code == 2 and 'Traceback' not in out + err and len(lines) == 1, err
    assert lines[0].startswith('miniai-gpt: error: ') and msg in lines[0], lines[0]
    assert not list(tmp_path.rglob('*.pt')) and 'step' not in out

def gpt(out, ck=None, *flags):
    return ['miniai-gpt', '--steps', '120', '--eval-every', '60', '--sample-chars', '20', '--out', str(out),
            *(['--checkpoint', str(ck), '--every', '15'] if ck else []), *flags]

def same_state(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)

def test_sigkill_then_same_command_resumes_bit_for_bit(tmp_path, text):
    "SIGKILL at random moments after the first checkpoint: the same command resumes to the same losses, samples and weights"
    code, ref_out, err = run(gpt(tmp_path/'ref', tmp_path/'ref.pt'))
    assert code == 0, err
    ref = torch.load(tmp_path/'ref.pt', weights_only=True)
    rng = random.Random(0)
    for k in range(2):
        out, ck = tmp_path/f'run{k}', tmp_path/f'run{k}.pt'
        p = subprocess.Popen(gpt(out, ck), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        t0 = time.time()
        while not ck.exists():
            assert p.poll() is None and time.time() - t0 < 120, p.stderr.read().decode()[-2000:]
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 1.5))
        p.send_signal(signal.SIGKILL); p.wait()
        killed_at = torch.load(ck, weights_only=True)
        assert not (out/'gpt.pt').exists(), 'killed before the end'
        code, again, err = run(gpt(out, ck))
        assert code == 0, err
        got = torch.load(ck, weights_only=True)
        assert torch.equal(got['batch_losses'][0], ref['batch_losses'][0]), f'run {k} (killed after step {killed_at["epoch"] * 60 + killed_at["batch"]}): losses differ'
        assert same_state(torch.load(out/'gpt.pt', weights_only=True), torch.load(tmp_path/'ref'/'gpt.pt', weights_only=True))
        last = lambda out: out[out.rindex('step 120:'):out.rindex('saved ')] # the last evaluation, its sample and the validation loss
        assert last(again) == last(ref_out)
    # sampling from the checkpoint and from gpt.pt: the same text for the same seed
    code, s1, err = run(['miniai-gpt', '--sample', 'ROMEO:', '--chars', '50', '--checkpoint', str(tmp_path/'ref.pt')])
    assert code == 0, err
    code, s2, err = run(['miniai-gpt', '--sample', 'ROMEO:', '--chars', '50', '--checkpoint', str(tmp_path/'ref'/'gpt.pt')])
    assert code == 0 and s1 == s2 and s1.startswith('ROMEO:') and len(s1.rstrip('\n')) == 56, s1
    code, _, err = run(['miniai-gpt', '--sample', 'café', '--checkpoint', str(tmp_path/'ref.pt')])
    assert code == 2 and "argument --sample: 'é' not in the vocabulary" in err

def test_checkpoint_of_another_model_is_one_clear_error(tmp_path, text):
    code, _, err = run(gpt(tmp_path/'a', tmp_path/'ck.pt', '--steps', '60'))
    assert code == 0, err
    code, out, err = run(gpt(tmp_path/'b', tmp_path/'ck.pt', '--n-head', '8'))
    [line] = error_lines(err)
    assert code == 1 and 'Traceback' not in err and "does not fit this run: its model has another _extra_state" in line and "'n_head': 4" in line, err

def test_sampling_a_file_that_is_not_a_gpt(tmp_path, text):
    torch.save({'w': torch.zeros(3)}, tmp_path/'x.pt')
    code, out, err = run(['miniai-gpt', '--sample', 'A', '--checkpoint', str(tmp_path/'x.pt')])
    [line] = error_lines(err)
    assert code == 1 and 'holds no GPT' in line
    with pytest.raises(CheckpointError, match='holds no GPT'): sample_gpt(tmp_path/'x.pt')
