"""UniR: trains a small reasoner against a frozen backbone with GRPO.

The policy is softmax(z_reasoner + z_backbone) (raw logit sum, temperature once on the sum); only the reasoner
gets gradients; rewards are binary exact match; advantages are normalised within each group of G samples of
one prompt. The reasoner's LM head starts at zero, so the initial policy is the backbone itself.
Optional (--offtask-kl, on by default, documented in the README): KL(backbone || backbone+reasoner) on the other
task's prompts, the GRPO reference-KL term applied off-task, so reasoners compose without hurting other tasks.

  nice -n 10 /usr/bin/python3 training/grpo.py --task math --backbone training/out/ckpt/backbone-S/step700.pt --steps 150
"""
import argparse, json, random
from common import *

ap = argparse.ArgumentParser()
ap.add_argument('--task', required=True, choices=['math', 'cipher'])
ap.add_argument('--backbone', required=True)
ap.add_argument('--steps', type=int, default=150)
ap.add_argument('--prompts', type=int, default=8)
ap.add_argument('--group', type=int, default=8)
ap.add_argument('--lr', type=float, default=2e-3)
ap.add_argument('--temperature', type=float, default=1.0)
ap.add_argument('--offtask-kl', type=float, default=0.2)
ap.add_argument('--eval-every', type=int, default=25)
ap.add_argument('--eval-n', type=int, default=50)
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--seed', type=int, default=0)
ap.add_argument('--sft-warmup', type=int, default=0, help='steps of SFT through the composition on gold completions before GRPO (a cold start; off by default)')
ap.add_argument('--name', help='run name (default reasoner-TASK)')
ap.add_argument('--grpo-lr', type=float, help='learning rate of the GRPO phase (default --lr)')
ap.add_argument('--from-backbone-layers', type=int, default=0, help='initialise the reasoner from the embedding, first K layers and final norm of the backbone (a pretrained small model, as UniR starts from one); LM head still zero')
ap.add_argument('--hidden', type=int, default=32)
ap.add_argument('--layers', type=int, default=2)
ap.add_argument('--inter', type=int, default=96)
a = ap.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(a.seed); r = random.Random(a.seed); gen = torch.Generator().manual_seed(a.seed)
backbone, bextra = load_ckpt(a.backbone)
for p in backbone.parameters(): p.requires_grad_(False)
if a.from_backbone_layers:
    bc = backbone.c
    reasoner = Llama(llama_config(bc['hiddenSize'], a.from_backbone_layers, bc['numHeads'], bc['intermediateSize']))
    own = reasoner.state_dict()
    for k, v in backbone.state_dict().items():
        if k in own and not k.startswith('lm_head'): own[k] = v.clone()
    reasoner.load_state_dict(own)
else:
    reasoner = Llama(llama_config(a.hidden, a.layers, 2, a.inter))
nn.init.zeros_(reasoner.lm_head.weight)
log(f'reasoner {a.task}: {param_count(reasoner)} parameters vs backbone {param_count(backbone)}')
opt = torch.optim.AdamW(reasoner.parameters(), lr=a.lr, weight_decay=0.0)
other = 'cipher' if a.task == 'math' else 'math'
max_new = 40 if a.task == 'math' else 10
outdir = os.path.join(OUT, 'ckpt', a.name or f'reasoner-{a.task}'); os.makedirs(outdir, exist_ok=True)
history = []


def seq_logprobs(prompts, comps):
    """Per-token log-probs of the completions under softmax(z_b + z_r), with a mask over completion tokens."""
    seqs = [p + c for p, c in zip(prompts, comps)]
    ids, mask = left_pad(seqs)
    with torch.no_grad(): zb, _, _ = backbone(ids, key_mask=mask)
    zr, _, _ = reasoner(ids, key_mask=mask)
    lp = (zb + zr)[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    T = ids.shape[1]
    cm = torch.tensor([[0] * (T - len(c)) + [1] * len(c) for c in comps], dtype=torch.float)[:, 1:]
    return lp, cm


def evaluate_now():
    reasoner.eval()
    acc = {t: evaluate([backbone, reasoner], t, n=a.eval_n) for t in ('math', 'cipher')}
    reasoner.train(); return acc


acc0 = {t: evaluate([backbone], t, n=a.eval_n) for t in ('math', 'cipher')}
log('backbone alone', acc0)
for step in range(1, a.sft_warmup + 1):
    # cold start: cross-entropy of gold completions under softmax(z_b + z_r), reasoner only (+ the same off-task KL)
    ids, m = sft_batch([train_example(a.task, r) for _ in range(32)])
    with torch.no_grad(): zb, _, _ = backbone(ids)
    zr, _, _ = reasoner(ids)
    loss = lm_loss(zb + zr, ids, m)
    if a.offtask_kl > 0:
        oids, _ = sft_batch([train_example(other, r) for _ in range(16)])
        with torch.no_grad(): ozb, _, _ = backbone(oids)
        ozr, _, _ = reasoner(oids); pb = ozb.log_softmax(-1); valid = (oids != PAD).float()
        loss = loss + a.offtask_kl * ((pb.exp() * (pb - (ozb + ozr).log_softmax(-1))).sum(-1) * valid).sum() / valid.sum()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(reasoner.parameters(), 1.0); opt.step()
    if step % 20 == 0: log(f'warmup {step} loss {loss.item():.3f}')
if a.sft_warmup:
    acc = evaluate_now(); history.append({'step': 0, 'after_sft_warmup': a.sft_warmup, **acc}); log('after warm-up', acc)
    save_ckpt(reasoner, os.path.join(outdir, 'step0.pt'), {'step': 0, 'acc': acc, 'backbone_acc': acc0, 'sftWarmup': a.sft_warmup,
              'backbone': os.path.relpath(a.backbone, ROOT), 'args': vars(a)})
if a.grpo_lr:
    for g in opt.param_groups: g['lr'] = a.grpo_lr
for step in range(1, a.steps + 1):
    exs = [train_example(a.task, r) for _ in range(a.prompts)]
    prompts = [[BOS] + encode(e['prompt']) for e in exs for _ in range(a.group)]
    reasoner.eval()
    comps = generate([backbone, reasoner], prompts, max_new=max_new, temperature=a.temperature, gen=gen)
    reasoner.train()
    rewards = torch.tensor([float(is_correct(exs[i // a.group], decode(c))) for i, c in enumerate(comps)]).view(a.prompts, a.group)
    adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)).view(-1)
    # the sampled sequences end with EOS unless cut at max_new
    comps_eos = [c + [EOS] if len(c) < max_new else c for c in comps]
    lp, cm = seq_logprobs(prompts, comps_eos)
    loss = -((lp * cm).sum(1) / cm.sum(1).clamp(min=1) * adv).mean()
    kl = torch.tensor(0.0)
    if a.offtask_kl > 0:
        oexs = [train_example(other, r) for _ in range(16)]
        ids, m = sft_batch(oexs)
        with torch.no_grad(): zb, _, _ = backbone(ids)
        zr, _, _ = reasoner(ids)
        pb = zb.log_softmax(-1)
        kl_tok = (pb.exp() * (pb - (zb + zr).log_softmax(-1))).sum(-1)
        valid = (ids != PAD).float()
        kl = (kl_tok * valid).sum() / valid.sum()
        loss = loss + a.offtask_kl * kl
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(reasoner.parameters(), 1.0); opt.step()
    log(f'step {step} reward {rewards.mean().item():.3f} loss {loss.item():.4f} offtask-kl {kl.item():.4f}')
    if step % a.eval_every == 0 or step == a.steps:
        acc = evaluate_now(); history.append({'step': step, 'train_reward': rewards.mean().item(), **acc}); log('eval', history[-1])
        save_ckpt(reasoner, os.path.join(outdir, f'step{step}.pt'),
                  {'step': step, 'acc': acc, 'backbone_acc': acc0, 'backbone': os.path.relpath(a.backbone, ROOT), 'args': vars(a)})
        with open(os.path.join(outdir, 'history.json'), 'w') as f: json.dump({'backbone': acc0, 'history': history}, f, indent=1)
