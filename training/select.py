"""Weak-to-strong selection on the validation set (never the held-out test set): for each checkpoint of L, the
accuracy of L alone on both tasks and of L + the math reasoner trained against S on math, at a few reasoner weights,
beside S's own. The exported L is the checkpoint with the best L + math accuracy among those at least as good as S
on both tasks (weak-to-strong needs L to be the stronger model).

  cd training && nice -n 10 /usr/bin/python3 select.py --s out/ckpt/backbone-S/step500.pt \
    --reasoner out/ckpt/reasoner-math-s2/step60.pt out/ckpt/backbone-L-grown2/step*.pt
"""
import argparse
from common import *

ap = argparse.ArgumentParser()
ap.add_argument('--reasoner', required=True)
ap.add_argument('--s', required=True, help='backbone S, for reference')
ap.add_argument('--weights', default='1.0')
ap.add_argument('--n', type=int, default=200)
ap.add_argument('backbones', nargs='+')
a = ap.parse_args()
torch.set_num_threads(1); torch.manual_seed(0)
reasoner, _ = load_ckpt(a.reasoner)
with torch.no_grad():
    S, _ = load_ckpt(a.s)
    log(f'{a.s}: S math {evaluate([S], "math", n=a.n, split="validation"):.3f} cipher {evaluate([S], "cipher", n=a.n, split="validation"):.3f}')
    for path in a.backbones:
        L, _ = load_ckpt(path)
        alone = evaluate([L], 'math', n=a.n, split='validation')
        row = [f'{path}: L math {alone:.3f} cipher {evaluate([L], "cipher", n=a.n, split="validation"):.3f}']
        for w in map(float, a.weights.split(',')):
            both = evaluate([L, reasoner], 'math', n=a.n, weights=[1.0, w], split='validation')
            row.append(f'L+math(w={w}) {both:.3f} ({100 * (both - alone):+.1f})')
        log(' | '.join(row))
