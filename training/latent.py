"""LiteReason on the toy math task.

--stage policy: the policy (a copy of backbone S) is fine-tuned on math: "Q:" prompts → the written chain of thought
  and answer; "L:" prompts → `<implicit_thought>N</implicit_thought>` with N = the number of reasoning steps
  (loss on the marker only: what follows it is produced through latent steps).
--stage projector: the policy is frozen; a projector of 3 SwiGLU layers, down(silu(gate(x))*up(x)), no residual or
  norm, is trained by SFT through the latent rollout: e_1 = P(h_close), e_{k+1} = P(h(e_k)), N steps, then the answer
  tokens are teacher-forced and their cross-entropy is back-propagated through every latent step into P only.

  nice -n 10 /usr/bin/python3 training/latent.py --stage policy --backbone training/out/ckpt/backbone-S/step700.pt
  nice -n 10 /usr/bin/python3 training/latent.py --stage projector --policy training/out/ckpt/policy/step300.pt
"""
import argparse, json, random
from common import *

ap = argparse.ArgumentParser()
ap.add_argument('--stage', required=True, choices=['policy', 'projector', 'joint'])
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
a = ap.parse_args()
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


def latent_rollout(policy, proj, exs, answers=None, max_new=8):
    """Prefix [BOS L:prompt marker], N latent steps (N from each example; one batch shares N), then either
    teacher-forced answer tokens (returns the loss) or greedy decoding (returns completions)."""
    n = exs[0]['steps']; assert all(e['steps'] == n for e in exs)
    prefixes = [[BOS] + encode(e['latent_prompt'] + marker(e)) for e in exs]
    ids, mask = left_pad(prefixes)
    _, h, past = policy(ids, key_mask=mask)
    B = len(exs); one = torch.ones(B, 1, dtype=torch.long); aux = 0.0
    for j in range(K * n):
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
    out = [[] for _ in range(B)]; done = [False] * B; z = lg[:, -1]
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


@torch.no_grad()
def eval_latent(policy, proj, n):
    exs = test_set('math')[:n]; correct = 0; steps = 0
    by = {}
    for e in exs: by.setdefault(e['steps'], []).append(e)
    for group in by.values():
        outs = latent_rollout(policy, proj, group)
        correct += sum(is_correct(e, decode(o)) for e, o in zip(group, outs))
    return correct / n


outdir = os.path.join(OUT, 'ckpt', a.name or a.stage); os.makedirs(outdir, exist_ok=True); history = []
if a.stage == 'policy':
    policy, _ = load_ckpt(a.backbone); policy.train()
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
            save_ckpt(policy, os.path.join(outdir, f'step{step}.pt'), {'step': step, 'acc': acc, 'marker_acc': mk, 'args': vars(a)})
            with open(os.path.join(outdir, 'history.json'), 'w') as f: json.dump(history, f, indent=1)
elif a.stage == 'joint':
    # The policy is taught to use its latent steps: policy and projector trained together through the latent
    # rollout (the SFT stand-in for LiteReason's second, RL stage), with the chain-of-thought and marker losses kept
    # so the same policy still writes its reasoning for "Q:" and markers for "L:".
    policy, _ = load_ckpt(a.policy); policy.train()
    H = policy.c['hiddenSize']; proj = Projector(H, 2 * H)
    proj.load_state_dict(torch.load(a.init_projector)['state'])
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
            save_ckpt(policy, os.path.join(outdir, f'policy-step{step}.pt'), {'step': step, 'cot_acc': cacc})
            tmp = os.path.join(outdir, f'projector-step{step}.pt')
            torch.save({'config': {'hiddenSize': H, 'innerSize': 2 * H, 'layers': 3, 'vocabSize': V}, 'state': proj.state_dict(),
                        'extra': {'step': step, 'acc': acc, 'tokensPerStep': 8 // K, 'policy': 'joint'}}, tmp + '.tmp')
            os.replace(tmp + '.tmp', tmp)
            with open(os.path.join(outdir, 'history.json'), 'w') as f: json.dump(history, f, indent=1)
else:
    policy, _ = load_ckpt(a.policy)
    for p in policy.parameters(): p.requires_grad_(False)
    H = policy.c['hiddenSize']; proj = Projector(H, 2 * H)
    for p in proj.parameters(): nn.init.normal_(p, std=0.5 / math.sqrt(p.shape[1]))
    if a.init_projector: proj.load_state_dict(torch.load(a.init_projector)['state'])
    opt = torch.optim.AdamW(proj.parameters(), lr=a.lr, weight_decay=0.0)
    for step in range(1, a.steps + 1):
        n = r.choice([2, 3, 4]); exs = []
        while len(exs) < a.batch:
            e = train_example('math', r)
            if e['steps'] == n: exs.append(e)
        loss = latent_rollout(policy, proj, exs, answers=True)
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(proj.parameters(), 1.0); opt.step()
        if step % 20 == 0: log(f'step {step} n {n} loss {loss.item():.3f}')
        if step % a.eval_every == 0 or step == a.steps:
            acc = eval_latent(policy, proj, a.eval_n); history.append({'step': step, 'latent_acc': acc}); log('eval', history[-1])
            tmp = os.path.join(outdir, f'step{step}.pt')
            torch.save({'config': {'hiddenSize': H, 'innerSize': 2 * H, 'layers': 3, 'vocabSize': V}, 'state': proj.state_dict(),
                        'extra': {'step': step, 'acc': acc, 'tokensPerStep': 8, 'policy': os.path.relpath(a.policy, ROOT)}}, tmp + '.tmp')
            os.replace(tmp + '.tmp', tmp)
            with open(os.path.join(outdir, 'history.json'), 'w') as f: json.dump(history, f, indent=1)
