"""Pre-trains a frozen backbone (S or L) on a 50/50 mix of the tasks, stopping early so it stays mediocre.
Saves a checkpoint at every evaluation (held-out accuracy in its name's JSON log) so any point can be picked.

  nice -n 10 /usr/bin/python3 training/pretrain.py --size S --steps 600
"""
import argparse, json, random
from common import *

SIZES = {
    'S': dict(hidden=64, layers=4, heads=4, inter=192),      # ~0.22M parameters
    'L': dict(hidden=128, layers=4, heads=4, inter=384),     # ~0.87M parameters (~4x S)
}

ap = argparse.ArgumentParser()
ap.add_argument('--size', required=True, choices=SIZES)
ap.add_argument('--steps', type=int, default=600)
ap.add_argument('--batch', type=int, default=64)
ap.add_argument('--lr', type=float, default=3e-3)
ap.add_argument('--eval-every', type=int, default=100)
ap.add_argument('--eval-n', type=int, default=100)
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--seed', type=int, default=0)
ap.add_argument('--math-frac', type=float, default=0.5, help='share of math problems in the mix')
ap.add_argument('--init', help='continue from this checkpoint')
ap.add_argument('--name', help='run name (default backbone-SIZE)')
a = ap.parse_args()
if a.init and not os.path.isfile(a.init): ap.error(f'--init {a.init}: no such file')
torch.set_num_threads(a.threads); torch.manual_seed(a.seed); r = random.Random(a.seed)
model = load_ckpt(a.init)[0].train() if a.init else Llama(llama_config(**SIZES[a.size]))
# (the model's own config: one grown by grow.py is not SIZES[a.size])
log(f'backbone {a.size}: {param_count(model)} parameters', model.c)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01, betas=(0.9, 0.95))
sched = (lambda s: 1.0) if a.init else (lambda s: min(1, (s + 1) / 50))
outdir = os.path.join(OUT, 'ckpt', a.name or f'backbone-{a.size}')
os.makedirs(outdir, exist_ok=True)
history = []
for step in range(1, a.steps + 1):
    for g in opt.param_groups: g['lr'] = a.lr * sched(step)
    exs = [train_example('math' if r.random() < a.math_frac else 'cipher', r) for _ in range(a.batch)]
    ids, m = sft_batch(exs)
    logits, _, _ = model(ids)
    loss = lm_loss(logits, ids, m)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    if step % 20 == 0: log(f'step {step} loss {loss.item():.3f}')
    if step % a.eval_every == 0 or step == a.steps:
        model.eval()
        acc = {t: evaluate([model], t, n=a.eval_n) for t in ('math', 'cipher')}
        model.train()
        history.append({'step': step, 'loss': loss.item(), **acc}); log('eval', history[-1])
        save_ckpt(model, os.path.join(outdir, f'step{step}.pt'), {'step': step, 'acc': acc, 'seed': a.seed, 'args': vars(a)})
        with open(os.path.join(outdir, 'history.json'), 'w') as f: json.dump(history, f, indent=1)
