"""Grows backbone L from S by a function-preserving width doubling (Net2Net-style): every hidden unit, head and
MLP unit of S is duplicated and the weights reading duplicated units are halved, so L starts with S's exact
logits; a little noise breaks the symmetry, then `pretrain.py --init` trains L further on the task mix.
S: hidden 64, 4 heads of 16, MLP 192  →  L: hidden 128, 8 heads of 16, MLP 384 (4x the parameters).

  /usr/bin/python3 training/grow.py --from out/ckpt/backbone-S/step500.pt --to out/ckpt/L-init.pt
"""
import argparse
from common import *

ap = argparse.ArgumentParser(); ap.add_argument('--from', dest='src', required=True); ap.add_argument('--to', required=True)
ap.add_argument('--noise', type=float, default=1e-3); ap.add_argument('--seed', type=int, default=0)
a = ap.parse_args(); torch.manual_seed(a.seed)
s, _ = load_ckpt(a.src); c = s.c
assert c['numHeads'] == c['numKvHeads']
L = Llama(llama_config(2 * c['hiddenSize'], c['numLayers'], 2 * c['numHeads'], 2 * c['intermediateSize']))
assert L.c['headDim'] == c['headDim']
dup_out = lambda W: torch.cat([W, W], 0)                 # output units duplicated
dup_in = lambda W: torch.cat([W, W], 1) / 2              # input is [x, x]: halve
both = lambda W: dup_out(dup_in(W))
sd = s.state_dict(); new = {}
new['embed.weight'] = torch.cat([sd['embed.weight']] * 2, 1)
new['norm.w'] = torch.cat([sd['norm.w']] * 2)
new['lm_head.weight'] = dup_in(sd['lm_head.weight'])
for i in range(c['numLayers']):
    p = f'layers.{i}.'
    for n in ('attn_norm.w', 'mlp_norm.w'): new[p + n] = torch.cat([sd[p + n]] * 2)
    # q/k/v: heads 0..n-1 are S's heads, n..2n-1 their copies (heads keep head_dim, so RoPE is unchanged)
    for n in ('wq.weight', 'wk.weight', 'wv.weight', 'w_gate.weight', 'w_up.weight', 'wo.weight', 'w_down.weight'): new[p + n] = both(sd[p + n])
for k, v in new.items(): new[k] = v + a.noise * torch.randn_like(v) * v.std()
L.load_state_dict(new); L.eval()
ids = torch.tensor([[BOS] + encode('Q:12+3\n12+3=')])
print('max |logit diff| S vs grown L:', (s(ids)[0] - L(ids)[0]).abs().max().item(), 'params', param_count(s), '->', param_count(L))
save_ckpt(L, a.to, {'grownFrom': a.src})
