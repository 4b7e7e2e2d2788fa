"""LiteReason on the toy math task.

--stage policy: the policy (a copy of backbone S) is fine-tuned on math: "Q:" prompts → the written chain of thought
  and answer; "L:" prompts → `<implicit_thought>N</implicit_thought>` with N = K x the number of reasoning steps
  (loss on the marker only: what follows it is produced through latent steps).
--stage projector: the policy is frozen; a projector of 3 SwiGLU layers, down(silu(gate(x))*up(x)), no residual or
  norm, is trained by SFT through the latent rollout: e_1 = P(h_close), e_{k+1} = P(h(e_k)), N steps, then the answer
  tokens are teacher-forced and their cross-entropy is back-propagated through every latent step into P only.
  --distill-steps first: a warm start for a policy trained with --stage compress (P(h) regressed on the embedding of
  the token the policy reads next at each position of its compressed chain).
--stage joint: policy and projector together through the rollout (optionally --aux-intermediate).
--stage curriculum: Coconut-style stages ("k:steps,..."): the first min(k, n) reasoning steps latent (K latent steps
  each), the rest written; --dense: every stage at once on one fully latent rollout.
--stage compress: the policy learns the fully latent format as text: after the marker it writes the intermediate
  results only, two digits each (K = 2 tokens per reasoning step), then the answer; "Q:" keeps the CoT loss.
--eval-only: the engine's greedy loop (the policy writes its own marker, N latent steps, the answer) on the held-out set.

  nice -n 10 /usr/bin/python3 training/latent.py --stage compress --latent-per-step 2 --policy training/out/ckpt/joint4/policy-step600.pt
  nice -n 10 /usr/bin/python3 training/latent.py --stage projector --latent-per-step 2 --distill-steps 400 --policy training/out/ckpt/compress3/step300.pt
(exact commands: training/run.sh)
"""
import argparse, json, random
from common import *

ap = argparse.ArgumentParser()
ap.add_argument('--stage', required=True, choices=['policy', 'projector', 'joint', 'curriculum', 'compress'])
ap.add_argument('--backbone'); ap.add_argument('--policy')
ap.add_argument('--steps', type=int, default=300)
ap.add_argument('--batch', type=int, default=32)
ap.add_argument('--lr', type=float, default=2e-3)
ap.add_argument('--eval-every', type=int, default=100)
ap.add_argument('--eval-n', type=int, default=50)
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--seed', type=int, default=0)
ap.add_argument('--init-projector', help='continue from this projector checkpoint')
ap.add_argument('--name', help='run name (default: the stage)')
ap.add_argument('--aux-intermediate', type=float, default=0.0, help='joint stage: weight of a loss making latent step k (k < N) predict the first digit of the k-th intermediate result')
ap.add_argument('--latent-per-step', type=int, default=1, help='latent steps per reasoning step (the marker asks for K x steps)')
ap.add_argument('--schedule', default='1:300,2:300,3:300,4:600',
                help='curriculum stage: "k:steps,..." — at stage k the first min(k, n) reasoning steps are latent (K latent steps each), the rest stays written')
ap.add_argument('--eval-only', action='store_true', help='with --policy and --init-projector: the engine-mirroring eval on the 200 held-out problems, then exit')
ap.add_argument('--dense', action='store_true', help='curriculum stage: every stage at once on one fully latent rollout (a written branch after each reasoning step); the schedule\'s k is then ignored for training')
ap.add_argument('--final-weight', type=float, default=1.0, help='--dense: weight of the branch after the last latent step (the answer)')
ap.add_argument('--distill-steps', type=int, default=0, help='projector stage: warm-up steps matching the embeddings of the compressed chain (see --stage compress) before the SFT through the rollout')
ap.add_argument('--distill-lr', type=float, default=3e-3)
ap.add_argument('--cot-batch', type=int, default=16, help='curriculum stage: "Q:" chain-of-thought and "L:" marker examples per step')
a = ap.parse_args()
# The checkpoints each stage starts from, refused here rather than as torch's error on None.
for flag in ['policy', 'init_projector'] if a.eval_only else {'policy': ['backbone'], 'joint': ['policy', 'init_projector']}.get(a.stage, ['policy']):
    if not getattr(a, flag): ap.error(f'{"--eval-only" if a.eval_only else "--stage " + a.stage} needs --{flag.replace("_", "-")}')
for flag in ('backbone', 'policy', 'init_projector'):
    if getattr(a, flag) and not os.path.isfile(getattr(a, flag)): ap.error(f'--{flag.replace("_", "-")} {getattr(a, flag)}: no such file')
torch.set_num_threads(a.threads); torch.manual_seed(a.seed); r = random.Random(a.seed)
AUX = a.aux_intermediate
K = a.latent_per_step


def marker(e): return f'<implicit_thought>{K * e["steps"]}</implicit_thought>'


class SwiGLU(nn.Module):
    def __init__(self, H, I):
        super().__init__()
        self.gate = nn.Linear(H, I, bias=False); self.up = nn.Linear(H, I, bias=False); self.down = nn.Linear(I, H, bias=False)

    def forward(self, x): return self.down(F.silu(self.gate(x)) * self.up(x))


class Projector(nn.Module):
    def __init__(self, H, I, n=3):
        super().__init__(); self.layers = nn.ModuleList(SwiGLU(H, I) for _ in range(n)); self.H, self.I, self.n = H, I, n

    def forward(self, x):
        for l in self.layers: x = l(x)
        return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def greedy_continue(policy, z, mask, past, max_new):
    """Greedy decoding from next-token logits z and a KV cache, until EOS or max_new tokens (the engine's loop)."""
    B = z.shape[0]; one = torch.ones(B, 1, dtype=torch.long)
    out = [[] for _ in range(B)]; done = [False] * B
    for _ in range(max_new):
        nxt = z.argmax(-1)
        for b in range(B):
            if not done[b]:
                if nxt[b].item() == EOS: done[b] = True
                else: out[b].append(nxt[b].item())
        if all(done): break
        mask = torch.cat([mask, one], 1)
        z, _, past = policy(nxt[:, None], key_mask=mask, past=past); z = z[:, -1]
    return out


def latent_rollout(policy, proj, exs, answers=None, max_new=8, steps=None):
    """Prefix [BOS L:prompt marker], N latent steps (N from each example; one batch shares N), then either
    teacher-forced answer tokens (returns the loss) or greedy decoding (returns completions)."""
    n = exs[0]['steps']; assert steps is not None or all(e['steps'] == n for e in exs)
    N = K * n if steps is None else steps  # latent steps: the gold marker's, or the one the policy wrote
    prefixes = [[BOS] + encode(e['latent_prompt'] + f'<implicit_thought>{N}</implicit_thought>') for e in exs]
    ids, mask = left_pad(prefixes)
    _, h, past = policy(ids, key_mask=mask)
    B = len(exs); one = torch.ones(B, 1, dtype=torch.long); aux = 0.0
    for j in range(N):
        e = proj(h[:, -1])
        mask = torch.cat([mask, one], 1)
        lg, h, past = policy(embeds=e[:, None], key_mask=mask, past=past)
        k = (j + 1) // K - 1  # the reasoning step that latent step j completes, if any
        if answers is not None and AUX > 0 and (j + 1) % K == 0 and k < n - 1:
            first = torch.tensor([TOK[e_['cot'].split(';')[k].split('=')[1][0]] for e_ in exs])
            aux = aux + F.cross_entropy(lg[:, -1], first) / (n - 1)
    if answers is not None:
        ans = [encode(e['answer']) + [EOS] for e in exs]
        T = max(map(len, ans))
        aid = torch.tensor([x + [PAD] * (T - len(x)) for x in ans]); am = torch.tensor([[1] * len(x) + [0] * (T - len(x)) for x in ans])
        lg2, _, _ = policy(aid[:, :-1], key_mask=torch.cat([mask, torch.ones(B, T - 1, dtype=torch.long)], 1), past=past)
        logits = torch.cat([lg[:, -1:], lg2], 1)
        ce = F.cross_entropy(logits.reshape(-1, V), aid.reshape(-1), reduction='none').view(B, T)
        return (ce * am).sum() / am.sum() + AUX * aux
    return greedy_continue(policy, lg[:, -1], mask, past, max_new)


@torch.no_grad()
def eval_latent(policy, proj, n):
    exs = test_set('math')[:n]; correct = 0; steps = 0
    by = {}
    for e in exs: by.setdefault(e['steps'], []).append(e)
    for group in by.values():
        outs = latent_rollout(policy, proj, group)
        correct += sum(is_correct(e, decode(o)) for e, o in zip(group, outs))
    return correct / n


def compressed(e):
    """The intermediate results, two digits each (07 for 7): what the latent steps stand for with --stage compress."""
    return ''.join(f"{int(s.split('=')[1]):02d}" for s in e['cot'].split(';')[:-1])


def stage_completion(e, k):
    """Curriculum stage k: the reasoning steps after the first min(k, n) (those are latent), then the answer."""
    return ''.join(s + ';' for s in e['cot'].split(';')[:-1][min(k, e['steps']):]) + e['answer']


def stage_latents(policy, proj, exs, k):
    """Stage k's prefix [BOS L:prompt <implicit_thought>K*m</implicit_thought>] (m = min(k, n), one n per batch), then
    its K*m latent steps; returns the logits after the last one, the key mask and the KV cache."""
    m = min(k, exs[0]['steps'])
    ids, mask = left_pad([[BOS] + encode(e['latent_prompt'] + f'<implicit_thought>{K * m}</implicit_thought>') for e in exs])
    lg, h, past = policy(ids, key_mask=mask)
    one = torch.ones(len(exs), 1, dtype=torch.long)
    for _ in range(K * m):
        mask = torch.cat([mask, one], 1)
        lg, h, past = policy(embeds=proj(h[:, -1])[:, None], key_mask=mask, past=past)
    return lg, mask, past


def curriculum_rollout(policy, proj, exs, k):
    """Coconut-style stage k: [BOS L:prompt <implicit_thought>K*m</implicit_thought>] (m = min(k, n), one n per batch),
    K*m latent steps as in latent_rollout, then the rest of the chain of thought and the answer teacher-forced; the
    cross-entropy of that written continuation is back-propagated through every latent step."""
    assert all(e['steps'] == exs[0]['steps'] for e in exs)
    lg, mask, past = stage_latents(policy, proj, exs, k)
    B = len(exs)
    cont = [encode(stage_completion(e, k)) + [EOS] for e in exs]
    T = max(map(len, cont))
    cid = torch.tensor([x + [PAD] * (T - len(x)) for x in cont]); cm = torch.tensor([[1.0] * len(x) + [0.0] * (T - len(x)) for x in cont])
    lg2, _, _ = policy(cid[:, :-1], key_mask=torch.cat([mask, torch.ones(B, T - 1, dtype=torch.long)], 1), past=past)
    logits = torch.cat([lg[:, -1:], lg2], 1)
    ce = F.cross_entropy(logits.reshape(-1, V), cid.reshape(-1), reduction='none').view(B, T)
    return (ce * cm).sum() / cm.sum()


@torch.no_grad()
def eval_engine(policy, proj, exs):
    """What the engine does with latent: 'marker' on "L:" prompts, greedy: the policy writes its own marker
    (3 tokens: <implicit_thought> N </implicit_thought>, N one digit here), N latent steps, then the answer.
    Returns (accuracy, mean reasoning tokens = marker tokens + latent steps, as eval/run.ts counts them)."""
    heads = generate([policy], [[BOS] + encode(e['latent_prompt']) for e in exs], max_new=3)
    correct, reasoning, by = 0, 0, {}
    for e, h3 in zip(exs, heads):
        if len(h3) == 3 and h3[0] == OPEN and h3[2] == CLOSE and VOCAB[h3[1]].isdigit() and int(VOCAB[h3[1]]) > 0:
            by.setdefault(int(VOCAB[h3[1]]), []).append(e)
        else:
            reasoning += len(h3)  # malformed marker: counted wrong (the engine would go on writing text)
    for N, group in by.items():
        outs = latent_rollout(policy, proj, group, steps=N)
        for e, o in zip(group, outs):
            correct += is_correct(e, decode(o)); c = decode(o)
            reasoning += 3 + N + (c.index('#') if '#' in c else len(o))
    return correct / len(exs), reasoning / len(exs)


def dense_rollout(policy, proj, exs, final_weight=1.0):
    """Every curriculum stage on one fully latent rollout: [BOS L:prompt <implicit_thought>K*n</implicit_thought>],
    K*n latent steps; after the K*j-th latent step (j = 1..n) a teacher-forced branch writes what stage j of the
    curriculum writes there (the chain of thought from step j+1 on, then the answer; for j = n just the answer).
    The branches only read the KV cache, the rollout goes on with the next latent step, so this is the fully latent
    format with a probe after each reasoning step. Returns the mean branch loss (the final branch weighted)."""
    n = exs[0]['steps']; assert all(e['steps'] == n for e in exs)
    ids, mask = left_pad([[BOS] + encode(e['latent_prompt'] + marker(e)) for e in exs])
    _, h, past = policy(ids, key_mask=mask)
    B = len(exs); one = torch.ones(B, 1, dtype=torch.long); total, wsum = 0.0, 0.0
    for i in range(K * n):
        mask = torch.cat([mask, one], 1)
        lg, h, past = policy(embeds=proj(h[:, -1])[:, None], key_mask=mask, past=past)
        if (i + 1) % K: continue
        j = (i + 1) // K
        cont = [encode(stage_completion(e, j)) + [EOS] for e in exs]
        T = max(map(len, cont))
        cid = torch.tensor([x + [PAD] * (T - len(x)) for x in cont]); cm = torch.tensor([[1.0] * len(x) + [0.0] * (T - len(x)) for x in cont])
        if T > 1:
            lg2, _, _ = policy(cid[:, :-1], key_mask=torch.cat([mask, torch.ones(B, T - 1, dtype=torch.long)], 1), past=past)
            logits = torch.cat([lg[:, -1:], lg2], 1)
        else:
            logits = lg[:, -1:]
        ce = F.cross_entropy(logits.reshape(-1, V), cid.reshape(-1), reduction='none').view(B, T)
        w = final_weight if j == n else 1.0
        total = total + w * (ce * cm).sum() / cm.sum(); wsum += w
    return total / wsum


@torch.no_grad()
def stage_generate(policy, proj, exs, k, max_new=40):
    """Greedy decoding in curriculum stage k's format (gold marker for min(k, n) steps, K latent steps each)."""
    lg, mask, past = stage_latents(policy, proj, exs, k)
    return greedy_continue(policy, lg[:, -1], mask, past, max_new)


SRC = a.backbone if a.stage == 'policy' and not a.eval_only else a.policy
policy, start = load_ckpt(SRC); H = policy.c['hiddenSize']
init_projector = torch.load(a.init_projector)['state'] if a.init_projector else None
# What the policy was trained from, carried over from stage to stage for training/export.py's provenance: the backbone
# checkpoint it began as, and each stage with the checkpoint that stage started from.
BACKBONE = os.path.relpath(a.backbone, ROOT) if a.stage == 'policy' else start.get('backbone')
STAGES = [] if a.stage == 'policy' else start.get('stages', [])


def policy_extra(step, **numbers):
    """A policy checkpoint's extra: its step and numbers, this run's args, the backbone and the stages so far."""
    return {'step': step, **numbers, 'args': vars(a), 'backbone': BACKBONE,
            'stages': STAGES + [{'stage': a.stage, 'from': os.path.relpath(SRC, ROOT), 'step': step, 'latentPerStep': K}]}


if a.eval_only:
    proj = Projector(H, 2 * H); proj.load_state_dict(init_projector)
    acc, rt = eval_engine(policy, proj, test_set('math'))
    log(json.dumps({'latent_acc': acc, 'latent_reasoning_tokens': rt, 'cot_acc': evaluate([policy], 'math', n=200), 'K': K, 'split': 'test', 'n': 200}))
    raise SystemExit(0)

outdir = os.path.join(OUT, 'ckpt', a.name or a.stage); os.makedirs(outdir, exist_ok=True); history = []
if a.stage == 'policy':
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=a.lr, weight_decay=0.01, betas=(0.9, 0.95))
    for step in range(1, a.steps + 1):
        exs = [train_example('math', r) for _ in range(a.batch)]
        half = a.batch // 2
        ids1, m1 = sft_batch(exs[:half])
        ids2, m2 = sft_batch(exs[half:], 'latent_prompt', completion=marker)
        m2 = m2.clone()
        for i in range(m2.shape[0]):  # no loss on the EOS after the marker: latent steps come there
            last = int(m2[i].nonzero().max()); m2[i, last] = 0
        l1 = lm_loss(policy(ids1)[0], ids1, m1); l2 = lm_loss(policy(ids2)[0], ids2, m2)
        loss = l1 + l2
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0); opt.step()
        if step % 20 == 0: log(f'step {step} cot {l1.item():.3f} marker {l2.item():.3f}')
        if step % a.eval_every == 0 or step == a.steps:
            policy.eval(); acc = evaluate([policy], 'math', n=a.eval_n)
            outs = generate([policy], [[BOS] + encode(e['latent_prompt']) for e in test_set('math')[:a.eval_n]], max_new=6)
            mk = sum(decode(o).startswith(marker(e)) for o, e in zip(outs, test_set('math'))) / a.eval_n
            policy.train()
            history.append({'step': step, 'cot_acc': acc, 'marker_acc': mk}); log('eval', history[-1])
            save_ckpt(policy, os.path.join(outdir, f'step{step}.pt'), policy_extra(step, acc=acc, marker_acc=mk))
            with open(os.path.join(outdir, 'history.json'), 'w') as f: json.dump(history, f, indent=1)
elif a.stage == 'joint':
    # The policy is taught to use its latent steps: policy and projector trained together through the latent
    # rollout (the SFT stand-in for LiteReason's second, RL stage), with the chain-of-thought and marker losses kept
    # so the same policy still writes its reasoning for "Q:" and markers for "L:".
    policy.train(); proj = Projector(H, 2 * H)
    proj.load_state_dict(init_projector)
    opt = torch.optim.AdamW(list(policy.parameters()) + list(proj.parameters()), lr=a.lr, weight_decay=0.0, betas=(0.9, 0.95))
    for step in range(1, a.steps + 1):
        n = r.choice([2, 3, 4]); exs = []
        while len(exs) < a.batch:
            e = train_example('math', r)
            if e['steps'] == n: exs.append(e)
        l_lat = latent_rollout(policy, proj, exs, answers=True)
        cot = [train_example('math', r) for _ in range(16)]
        ids1, m1 = sft_batch(cot)
        ids2, m2 = sft_batch(cot, 'latent_prompt', completion=marker)
        for i in range(m2.shape[0]): m2[i, int(m2[i].nonzero().max())] = 0
        l_cot = lm_loss(policy(ids1)[0], ids1, m1); l_mk = lm_loss(policy(ids2)[0], ids2, m2)
        loss = l_lat + l_cot + l_mk
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(list(policy.parameters()) + list(proj.parameters()), 1.0); opt.step()
        if step % 20 == 0: log(f'step {step} n {n} latent {l_lat.item():.3f} cot {l_cot.item():.3f} marker {l_mk.item():.3f}')
        if step % a.eval_every == 0 or step == a.steps:
            policy.eval()
            acc = eval_latent(policy, proj, a.eval_n); cacc = evaluate([policy], 'math', n=a.eval_n)
            policy.train()
            history.append({'step': step, 'latent_acc': acc, 'cot_acc': cacc}); log('eval', history[-1])
            save_ckpt(policy, os.path.join(outdir, f'policy-step{step}.pt'), policy_extra(step, cot_acc=cacc))
            tmp = os.path.join(outdir, f'projector-step{step}.pt')
            torch.save({'config': {'hiddenSize': H, 'innerSize': 2 * H, 'layers': 3, 'vocabSize': V}, 'state': proj.state_dict(),
                        'extra': {'step': step, 'acc': acc, 'tokensPerStep': 8 // K,
                                  'policy': os.path.relpath(os.path.join(outdir, f'policy-step{step}.pt'), ROOT), 'args': vars(a)}}, tmp + '.tmp')
            os.replace(tmp + '.tmp', tmp)
            with open(os.path.join(outdir, 'history.json'), 'w') as f: json.dump(history, f, indent=1)
elif a.stage == 'curriculum':
    # Coconut-style curriculum (the SFT stage LiteReason builds on): at stage k the first min(k, n) reasoning steps
    # are replaced by K latent steps each and the rest of the chain of thought stays written; the loss on that
    # written rest and the answer goes back through the latent steps into the projector and the policy, so each
    # latent step has to carry the intermediate result the text after it starts from. The chain-of-thought loss
    # ("Q:") and the marker loss ("L:", N = K x steps, the fully latent format) are kept.
    policy.train(); proj = Projector(H, 2 * H)
    if init_projector: proj.load_state_dict(init_projector)
    else:
        for p in proj.parameters(): nn.init.normal_(p, std=0.5 / math.sqrt(p.shape[1]))
    params = list(policy.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0, betas=(0.9, 0.95))
    schedule = [tuple(map(int, x.split(':'))) for x in a.schedule.split(',')]
    val = validation_set('math'); step = 0
    for k, nsteps in schedule:
        for _ in range(nsteps):
            step += 1
            n = r.choice([2, 3, 4]); exs = []
            while len(exs) < a.batch:
                e = train_example('math', r)
                if e['steps'] == n: exs.append(e)
            l_lat = dense_rollout(policy, proj, exs, a.final_weight) if a.dense else curriculum_rollout(policy, proj, exs, k)
            cot = [train_example('math', r) for _ in range(a.cot_batch)]
            ids1, m1 = sft_batch(cot)
            ids2, m2 = sft_batch(cot, 'latent_prompt', completion=marker)
            for i in range(m2.shape[0]): m2[i, int(m2[i].nonzero().max())] = 0
            l_cot = lm_loss(policy(ids1)[0], ids1, m1); l_mk = lm_loss(policy(ids2)[0], ids2, m2)
            loss = l_lat + l_cot + l_mk
            opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
            if step % 20 == 0: log(f'step {step} stage {k} n {n} latent {l_lat.item():.3f} cot {l_cot.item():.3f} marker {l_mk.item():.3f}')
            if step % a.eval_every == 0 or _ == nsteps - 1:
                policy.eval()
                sub = val[:a.eval_n]
                by = {}
                for e in sub: by.setdefault(e['steps'], []).append(e)
                with torch.no_grad():  # this stage's format, teacher-forced marker: exact match of the greedy continuation
                    st = 0
                    for g in by.values():
                        outs = stage_generate(policy, proj, g, k)
                        st += sum(is_correct(e, decode(o)) for e, o in zip(g, outs))
                acc, rt = eval_engine(policy, proj, sub); cacc = evaluate([policy], 'math', n=a.eval_n, split='validation')
                policy.train()
                history.append({'step': step, 'stage': k, 'stage_acc': st / len(sub), 'latent_acc': acc, 'latent_reasoning_tokens': rt,
                                'cot_acc': cacc, 'split': 'validation', 'n': len(sub)}); log('eval', history[-1])
                save_ckpt(policy, os.path.join(outdir, f'policy-step{step}.pt'), policy_extra(step, stage=k, cot_acc=cacc))
                tmp = os.path.join(outdir, f'projector-step{step}.pt')
                torch.save({'config': {'hiddenSize': H, 'innerSize': 2 * H, 'layers': 3, 'vocabSize': V}, 'state': proj.state_dict(),
                            'extra': {'step': step, 'stage': k, 'acc': acc, 'tokensPerStep': 8 // K,
                                      'policy': os.path.relpath(os.path.join(outdir, f'policy-step{step}.pt'), ROOT), 'args': vars(a)}}, tmp + '.tmp')
                os.replace(tmp + '.tmp', tmp)
                with open(os.path.join(outdir, 'history.json'), 'w') as f: json.dump(history, f, indent=1)
elif a.stage == 'compress':
    # The policy learns the fully latent format as text first: after the marker (N = K x steps, K = 2) it writes the
    # intermediate results only, two digits each ("52", "49", "57": K = 2 tokens per reasoning step, where the chain
    # of thought writes "52-3=49;", 8), then the answer. These digit positions are what the latent steps take over:
    # the projector is then trained (--stage projector --distill-steps, policy frozen) to feed, from the hidden state
    # at each position, what the policy would read next, and by SFT through the latent rollout.
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=a.lr, weight_decay=0.01, betas=(0.9, 0.95))
    val = validation_set('math')
    comp = lambda e: marker(e) + compressed(e) + e['answer']
    for step in range(1, a.steps + 1):
        exs = [train_example('math', r) for _ in range(a.batch)]
        ids2, m2 = sft_batch(exs, 'latent_prompt', completion=comp)
        cot = [train_example('math', r) for _ in range(a.cot_batch)]
        ids1, m1 = sft_batch(cot)
        l_cmp = lm_loss(policy(ids2)[0], ids2, m2); l_cot = lm_loss(policy(ids1)[0], ids1, m1)
        loss = l_cmp + l_cot
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0); opt.step()
        if step % 20 == 0: log(f'step {step} compressed {l_cmp.item():.3f} cot {l_cot.item():.3f}')
        if step % a.eval_every == 0 or step == a.steps:
            policy.eval(); sub = val[:a.eval_n]
            outs = generate([policy], [[BOS] + encode(e['latent_prompt']) for e in sub], max_new=20)
            cacc_txt = sum(is_correct(e, decode(o)) and decode(o).startswith(marker(e)) for e, o in zip(sub, outs)) / len(sub)
            cacc = evaluate([policy], 'math', n=a.eval_n, split='validation')
            policy.train()
            history.append({'step': step, 'compressed_text_acc': cacc_txt, 'cot_acc': cacc, 'split': 'validation', 'n': len(sub)}); log('eval', history[-1])
            save_ckpt(policy, os.path.join(outdir, f'step{step}.pt'), policy_extra(step, cot_acc=cacc, compressed_text_acc=cacc_txt))
            with open(os.path.join(outdir, 'history.json'), 'w') as f: json.dump(history, f, indent=1)
else:
    for p in policy.parameters(): p.requires_grad_(False)
    proj = Projector(H, 2 * H)
    for p in proj.parameters(): nn.init.normal_(p, std=0.5 / math.sqrt(p.shape[1]))
    if init_projector: proj.load_state_dict(init_projector)
    val = validation_set('math')

    def save_proj(step, acc, rt, phase):
        history.append({'step': step, 'phase': phase, 'latent_acc': acc, 'latent_reasoning_tokens': rt, 'split': 'validation', 'n': a.eval_n}); log('eval', history[-1])
        tmp = os.path.join(outdir, f'step{step}.pt')
        torch.save({'config': {'hiddenSize': H, 'innerSize': 2 * H, 'layers': 3, 'vocabSize': V}, 'state': proj.state_dict(),
                    'extra': {'step': step, 'acc': acc, 'tokensPerStep': 8 // K, 'policy': os.path.relpath(a.policy, ROOT), 'args': vars(a)}}, tmp + '.tmp')
        os.replace(tmp + '.tmp', tmp)
        with open(os.path.join(outdir, 'history.json'), 'w') as f: json.dump(history, f, indent=1)

    if a.distill_steps:
        # Warm start (policy trained with --stage compress): the projector maps the post-norm hidden state at the
        # close marker and at each written digit of the compressed chain to the embedding of the token the policy
        # reads next there (teacher-forced text, policy frozen, MSE).
        opt = torch.optim.AdamW(proj.parameters(), lr=a.distill_lr, weight_decay=0.0)
        E = policy.embed.weight.detach()
        for step in range(1, a.distill_steps + 1):
            exs = [train_example('math', r) for _ in range(a.batch)]
            ids, _ = sft_batch(exs, 'latent_prompt', completion=lambda e: marker(e) + compressed(e) + e['answer'])
            with torch.no_grad(): hn = policy(ids)[1]
            src, tgt = [], []
            for b, e in enumerate(exs):
                c = int((ids[b] == CLOSE).nonzero()[0])
                for t in range(c, c + K * e['steps']): src.append(hn[b, t]); tgt.append(E[ids[b, t + 1]])
            loss = F.mse_loss(proj(torch.stack(src)), torch.stack(tgt)) / E.pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
            if step % 50 == 0: log(f'distill step {step} relative mse {loss.item():.4f}')
            if step % a.eval_every == 0 or step == a.distill_steps:
                acc, rt = eval_engine(policy, proj, val[:a.eval_n]); save_proj(step, acc, rt, 'distill')
    opt = torch.optim.AdamW(proj.parameters(), lr=a.lr, weight_decay=0.0)
    for s_ in range(1, a.steps + 1):
        step = a.distill_steps + s_
        n = r.choice([2, 3, 4]); exs = []
        while len(exs) < a.batch:
            e = train_example('math', r)
            if e['steps'] == n: exs.append(e)
        loss = latent_rollout(policy, proj, exs, answers=True)
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(proj.parameters(), 1.0); opt.step()
        if step % 20 == 0: log(f'step {step} n {n} loss {loss.item():.3f}')
        if s_ % a.eval_every == 0 or s_ == a.steps:
            acc, rt = eval_engine(policy, proj, val[:a.eval_n]); save_proj(step, acc, rt, 'rollout-sft')
