"""Shared pieces of the reasonplug training tooling: tokenizer, tasks, a Llama that matches the project's ONNX
builder (packages/core/src/onnx/llama-builder.ts) exactly, sampling and weight export.

Everything is seeded; run with Debian's PyTorch (`/usr/bin/python3`), CPU only.
"""
import json, math, os, random, struct, time
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(ROOT, 'out')

# ---------------------------------------------------------------- tokenizer (char level + two marker tokens)
SPECIAL = ['<pad>', '<s>', '</s>']
MARKERS = ['<implicit_thought>', '</implicit_thought>']
CHARS = list('0123456789+-=:;#\n ') + list('abcdefghijklmnopqrstuvwxyz') + ['Q', 'C', 'L']
VOCAB = SPECIAL + MARKERS + CHARS
TOK = {t: i for i, t in enumerate(VOCAB)}
PAD, BOS, EOS = 0, 1, 2
OPEN, CLOSE = TOK['<implicit_thought>'], TOK['</implicit_thought>']
V = len(VOCAB)


def encode(text):
    ids, i = [], 0
    while i < len(text):
        for m in MARKERS:
            if text.startswith(m, i):
                ids.append(TOK[m]); i += len(m); break
        else:
            ids.append(TOK[text[i]]); i += 1
    return ids


def decode(ids):
    return ''.join(VOCAB[i] for i in ids if i > 2)


def tokenizer_json():
    """A Hugging Face tokenizer.json: BPE without merges over single characters (so every character is a token),
    the two marker strings as added (non-special) tokens, BOS prepended by the post-processor, Fuse decoder."""
    added = [dict(id=TOK[t], content=t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=t in SPECIAL)
             for t in SPECIAL + MARKERS]
    return {
        'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': added,
        'normalizer': None, 'pre_tokenizer': None,
        'post_processor': {'type': 'TemplateProcessing',
                           'single': [{'SpecialToken': {'id': '<s>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}}],
                           'pair': [{'SpecialToken': {'id': '<s>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}},
                                    {'Sequence': {'id': 'B', 'type_id': 1}}],
                           'special_tokens': {'<s>': {'id': '<s>', 'ids': [BOS], 'tokens': ['<s>']}}},
        'decoder': {'type': 'Fuse'},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': None,
                  'end_of_word_suffix': None, 'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                  'vocab': {t: i for i, t in enumerate(VOCAB)}, 'merges': []},
    }


def tokenizer_config():
    return {'bos_token': '<s>', 'eos_token': '</s>', 'pad_token': '<pad>', 'add_bos_token': True, 'add_eos_token': False,
            'model_max_length': 256, 'tokenizer_class': 'PreTrainedTokenizerFast', 'clean_up_tokenization_spaces': False}


def write_tokenizer(dir):
    os.makedirs(dir, exist_ok=True)
    with open(os.path.join(dir, 'tokenizer.json'), 'w') as f: json.dump(tokenizer_json(), f, indent=1)
    with open(os.path.join(dir, 'tokenizer_config.json'), 'w') as f: json.dump(tokenizer_config(), f, indent=1)


# ---------------------------------------------------------------- tasks
# math: left-to-right chains of +/- on a 2-digit start, with a chain of thought and a final answer after '#'.
#   prompt "Q:47+5-3+8\n"  completion "47+5=52;52-3=49;49+8=57;#57"
#   latent prompt "L:47+5-3+8\n" completion "<implicit_thought>3</implicit_thought>#57" (one latent step per CoT step)
# cipher: a fixed substitution cipher over a-z (the analogue of translation).
#   prompt "C:hello\n" completion "xqmmg"
CIPHER_KEY = None


def cipher_key():
    global CIPHER_KEY
    if CIPHER_KEY is None:
        letters = list('abcdefghijklmnopqrstuvwxyz')
        r = random.Random(1234); perm = letters[:]; r.shuffle(perm)
        CIPHER_KEY = dict(zip(letters, perm))
    return CIPHER_KEY


def make_math(r):
    a = r.randint(10, 59); n = r.randint(2, 4); ops = []; cur = a
    for _ in range(n):
        b = r.randint(2, 9)
        op = r.choice('+-')
        if cur - b < 0: op = '+'
        if cur + b > 99: op = '-'
        ops.append((op, b)); cur = cur + b if op == '+' else cur - b
    expr = str(a) + ''.join(f'{o}{b}' for o, b in ops)
    steps, cur = [], a
    for o, b in ops:
        nxt = cur + b if o == '+' else cur - b
        steps.append(f'{cur}{o}{b}={nxt};'); cur = nxt
    return {'task': 'math', 'key': expr, 'prompt': f'Q:{expr}\n', 'cot': ''.join(steps), 'answer': f'#{cur}', 'steps': n,
            'latent_prompt': f'L:{expr}\n'}


def make_cipher(r):
    w = ''.join(r.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(r.randint(3, 6)))
    k = cipher_key()
    return {'task': 'cipher', 'key': w, 'prompt': f'C:{w}\n', 'cot': '', 'answer': ''.join(k[c] for c in w), 'steps': 0}


MAKERS = {'math': make_math, 'cipher': make_cipher}


def test_set(task, n=200):
    r = random.Random({'math': 777, 'cipher': 778}[task]); seen, out = set(), []
    while len(out) < n:
        ex = MAKERS[task](r)
        if ex['key'] not in seen: seen.add(ex['key']); out.append(ex)
    return out


def validation_set(task, n=200):
    """Problems for choosing checkpoints and weights: disjoint from the held-out test set, never used for the table."""
    test = {e['key'] for e in test_set(task)}
    r = random.Random({'math': 877, 'cipher': 878}[task]); seen, out = set(), []
    while len(out) < n:
        ex = MAKERS[task](r)
        if ex['key'] not in seen and ex['key'] not in test: seen.add(ex['key']); out.append(ex)
    return out


_TEST_KEYS = {}


def train_example(task, r):
    """A training example whose problem is not in the held-out test set."""
    if task not in _TEST_KEYS: _TEST_KEYS[task] = {e['key'] for e in test_set(task)}
    while True:
        ex = MAKERS[task](r)
        if ex['key'] not in _TEST_KEYS[task]: return ex


def write_test_sets(dir):
    os.makedirs(dir, exist_ok=True)
    for task in MAKERS:
        with open(os.path.join(dir, f'{task}.jsonl'), 'w') as f:
            for e in test_set(task): f.write(json.dumps({k: e[k] for k in e if k != 'key'}) + '\n')


def is_correct(ex, completion):
    """Exact match: the final answer (text after the last '#' for math, the whole completion for cipher)."""
    c = completion.strip()
    if ex['task'] == 'math':
        return '#' in c and c[c.rindex('#'):] == ex['answer']
    return c == ex['answer']


# ---------------------------------------------------------------- model (the math of llama-builder.ts)
class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__(); self.w = nn.Parameter(torch.ones(d)); self.eps = eps

    def forward(self, x):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.w


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, nh, nkv, hd, I = c['hiddenSize'], c['numHeads'], c['numKvHeads'], c['headDim'], c['intermediateSize']
        self.nh, self.nkv, self.hd = nh, nkv, hd
        self.attn_norm = RMSNorm(H, c['rmsNormEps']); self.mlp_norm = RMSNorm(H, c['rmsNormEps'])
        self.wq = nn.Linear(H, nh * hd, bias=False); self.wk = nn.Linear(H, nkv * hd, bias=False)
        self.wv = nn.Linear(H, nkv * hd, bias=False); self.wo = nn.Linear(nh * hd, H, bias=False)
        self.w_gate = nn.Linear(H, I, bias=False); self.w_up = nn.Linear(H, I, bias=False); self.w_down = nn.Linear(I, H, bias=False)

    def forward(self, h, cos, sin, bias, past):
        B, S, _ = h.shape
        x = self.attn_norm(h)
        q = self.wq(x).view(B, S, self.nh, self.hd).transpose(1, 2)
        k = self.wk(x).view(B, S, self.nkv, self.hd).transpose(1, 2)
        v = self.wv(x).view(B, S, self.nkv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k], 2); v = torch.cat([past[1], v], 2)
        present = (k, v)
        rep = self.nh // self.nkv
        if rep > 1:
            k = k.repeat_interleave(rep, 1); v = v.repeat_interleave(rep, 1)
        s = (q / math.sqrt(self.hd)) @ k.transpose(2, 3) + bias
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, S, self.nh * self.hd)
        h = h + self.wo(o)
        y = self.mlp_norm(h)
        h = h + self.w_down(F.silu(self.w_gate(y)) * self.w_up(y))
        return h, present


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def llama_config(hidden, layers, heads, inter, kv_heads=None):
    return {'vocabSize': V, 'hiddenSize': hidden, 'numLayers': layers, 'numHeads': heads, 'numKvHeads': kv_heads or heads,
            'headDim': hidden // heads, 'intermediateSize': inter, 'ropeTheta': 10000.0, 'rmsNormEps': 1e-5,
            'ropeStyle': 'half', 'tieWordEmbeddings': False}


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c['vocabSize'], c['hiddenSize'])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c['numLayers']))
        self.norm = RMSNorm(c['hiddenSize'], c['rmsNormEps'])
        self.lm_head = nn.Linear(c['hiddenSize'], c['vocabSize'], bias=False)
        hd = c['headDim']
        self.register_buffer('inv_freq', torch.tensor([c['ropeTheta'] ** (-2 * j / hd) for j in range(hd // 2)]), persistent=False)
        for p in self.parameters():
            if p.dim() == 2: nn.init.normal_(p, std=0.02)

    def forward(self, ids=None, embeds=None, key_mask=None, past=None, pos=None):
        """ids [B,S] and/or embeds [B,E,H] (concatenated after the ids, as the ONNX graph does); key_mask [B,T] (1 = real)
        over past + current; pos [B,S] (default: cumsum(key_mask)-1 on the current part). Returns logits, post-norm
        hidden states, presents."""
        parts = []
        if ids is not None: parts.append(self.embed(ids))
        if embeds is not None: parts.append(embeds)
        h = torch.cat(parts, 1)
        B, S, _ = h.shape
        P = 0 if past is None else past[0][0].shape[2]
        T = P + S
        if key_mask is None: key_mask = torch.ones(B, T, dtype=torch.long)
        if pos is None: pos = (key_mask.cumsum(1) - 1).clamp(min=0)[:, P:]
        freqs = pos.float()[..., None] * self.inv_freq
        cos, sin = freqs.cos()[:, None], freqs.sin()[:, None]
        rows = torch.arange(S)[:, None] + P
        allowed = (torch.arange(T)[None, :] <= rows)[None] & key_mask.bool()[:, None, :]
        bias = torch.where(allowed, 0.0, -1e9)[:, None]
        presents = []
        for i, layer in enumerate(self.layers):
            h, pr = layer(h, cos, sin, bias, None if past is None else past[i]); presents.append(pr)
        hn = self.norm(h)
        return self.lm_head(hn), hn, presents


def param_count(m):
    return sum(p.numel() for p in m.parameters())


def save_ckpt(model, path, extra=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    torch.save({'config': model.c, 'state': model.state_dict(), 'extra': extra or {}}, tmp)
    os.replace(tmp, path)


def load_ckpt(path):
    d = torch.load(path)
    m = Llama(d['config']); m.load_state_dict(d['state']); m.eval()
    return m, d.get('extra', {})


# ---------------------------------------------------------------- batching and decoding
def sft_batch(examples, field_prompt='prompt', completion=lambda e: e['cot'] + e['answer']):
    """Right-padded [BOS prompt completion EOS]; targets only on the completion (and EOS)."""
    seqs, masks = [], []
    for e in examples:
        p = [BOS] + encode(e[field_prompt]); c = encode(completion(e)) + [EOS]
        seqs.append(p + c); masks.append([0] * len(p) + [1] * len(c))
    T = max(map(len, seqs))
    ids = torch.tensor([s + [PAD] * (T - len(s)) for s in seqs])
    m = torch.tensor([mm + [0] * (T - len(mm)) for mm in masks], dtype=torch.float)
    return ids, m


def lm_loss(logits, ids, m):
    lp = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction='none').view(ids.shape[0], -1)
    return (lp * m[:, 1:]).sum() / m[:, 1:].sum()


def left_pad(prompts):
    T = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


@torch.no_grad()
def generate(models, prompts, max_new=40, temperature=0.0, gen=None, weights=None):
    """Decodes with the sum of the models' logits (UniR: z = z_backbone + sum w_i z_reasoner_i), one KV cache each.
    prompts: lists of ids (BOS included). Returns the completion ids (EOS excluded) per prompt."""
    weights = weights or [1.0] * len(models)
    ids, mask = left_pad(prompts)
    B = ids.shape[0]
    pasts = [None] * len(models)
    out = [[] for _ in range(B)]; done = torch.zeros(B, dtype=torch.bool)
    cur = ids
    for _ in range(max_new):
        z = 0
        for j, m in enumerate(models):
            lg, _, pasts[j] = m(cur, key_mask=mask, past=pasts[j])
            z = z + weights[j] * lg[:, -1]
        if temperature > 0:
            nxt = torch.multinomial((z / temperature).softmax(-1), 1, generator=gen)[:, 0]
        else:
            nxt = z.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        for b in range(B):
            if not done[b]:
                if nxt[b].item() == EOS: done[b] = True
                else: out[b].append(nxt[b].item())
        if done.all(): break
        cur = nxt[:, None]
        mask = torch.cat([mask, (~done).long()[:, None] | torch.ones(B, 1, dtype=torch.long)], 1)
    return out


def evaluate(models, task, n=200, weights=None, bs=100, field='prompt', max_new=40, split='test'):
    exs = (test_set if split == 'test' else validation_set)(task)[:n]; correct = 0
    for i in range(0, len(exs), bs):
        chunk = exs[i:i + bs]
        outs = generate(models, [[BOS] + encode(e[field]) for e in chunk], max_new=max_new, weights=weights)
        correct += sum(is_correct(e, decode(o)) for e, o in zip(chunk, outs))
    return correct / len(exs)


# ---------------------------------------------------------------- export (raw float32 tensors + JSON, read by scripts/export-modules.ts)
def export_llama(model, dir, meta):
    os.makedirs(dir, exist_ok=True)
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    tensors = {}

    def put(name, t):
        fn = name + '.bin'
        with open(os.path.join(dir, fn), 'wb') as f: f.write(t.numpy().astype('<f4').tobytes())
        tensors[name] = {'file': fn, 'shape': list(t.shape)}
    put('embed', sd['embed.weight'])
    for i in range(model.c['numLayers']):
        p = f'layers.{i}.'
        for key, src in [('attnNorm', 'attn_norm.w'), ('wq', 'wq.weight'), ('wk', 'wk.weight'), ('wv', 'wv.weight'), ('wo', 'wo.weight'),
                         ('mlpNorm', 'mlp_norm.w'), ('wGate', 'w_gate.weight'), ('wUp', 'w_up.weight'), ('wDown', 'w_down.weight')]:
            put(f'{p}{key}', sd[p + src])
    put('finalNorm', sd['norm.w']); put('lmHead', sd['lm_head.weight'])
    with open(os.path.join(dir, 'weights.json'), 'w') as f:
        json.dump({'format': 'reasonplug-raw-f32-v1', 'kind': 'llama', 'config': model.c, 'tensors': tensors, 'meta': meta}, f, indent=1)
    write_tokenizer(dir)


def log(*a):
    print(time.strftime('%H:%M:%S'), *a, flush=True)
