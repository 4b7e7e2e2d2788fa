"""Reads a committed module's model.onnx back into a torch checkpoint (the inverse of export.py + scripts/export-modules.ts),
so training can continue from the committed weights when training/out/ is gone. The builders store matrices
transposed as `<name>.T` ([in, out]); norms and the embedding as they are.

  /usr/bin/python3 training/import_onnx.py --policy ../examples/modules/toy-math-policy/model.onnx --to out/ckpt/joint4/policy-step600.pt
  /usr/bin/python3 training/import_onnx.py --projector ../examples/modules/toy-math-projector/model.onnx --to out/ckpt/joint4/projector-step600.pt
"""
import argparse
import onnx
from onnx import numpy_helper
from common import *

ap = argparse.ArgumentParser()
ap.add_argument('--policy'); ap.add_argument('--projector'); ap.add_argument('--to', required=True)
ap.add_argument('--tokens-per-step', type=int, default=8)
a = ap.parse_args()


def inits(path):
    return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(path).graph.initializer}


if a.policy:
    w = inits(a.policy)
    H = w['model.embed_tokens.weight'].shape[1]; L = sum(1 for k in w if k.endswith('input_layernorm.weight'))
    I = w['model.layers.0.mlp.gate_proj.weight.T'].shape[1]; hd = 2 * w['rope.inv_freq'].shape[0]
    m = Llama(llama_config(H, L, H // hd, I))
    sd = {'embed.weight': w['model.embed_tokens.weight'], 'norm.w': w['model.norm.weight'], 'lm_head.weight': w['lm_head.weight.T'].t()}
    for i in range(L):
        p = f'model.layers.{i}.'
        sd[f'layers.{i}.attn_norm.w'] = w[p + 'input_layernorm.weight']; sd[f'layers.{i}.mlp_norm.w'] = w[p + 'post_attention_layernorm.weight']
        for dst, src in [('wq', 'self_attn.q_proj'), ('wk', 'self_attn.k_proj'), ('wv', 'self_attn.v_proj'), ('wo', 'self_attn.o_proj'),
                         ('w_gate', 'mlp.gate_proj'), ('w_up', 'mlp.up_proj'), ('w_down', 'mlp.down_proj')]:
            sd[f'layers.{i}.{dst}.weight'] = w[p + src + '.weight.T'].t().contiguous()
    m.load_state_dict(sd)
    save_ckpt(m, a.to, {'importedFrom': a.policy})
    log('policy', param_count(m), 'parameters →', a.to)
if a.projector:
    w = inits(a.projector)
    n = sum(1 for k in w if k.endswith('.gate.T')); H, I = w['layers.0.gate.T'].shape
    state = {f'layers.{i}.{k}.weight': w[f'layers.{i}.{k}.T'].t().contiguous() for i in range(n) for k in ('gate', 'up', 'down')}
    os.makedirs(os.path.dirname(a.to), exist_ok=True)
    torch.save({'config': {'hiddenSize': int(H), 'innerSize': int(I), 'layers': n, 'vocabSize': V}, 'state': state,
                'extra': {'importedFrom': a.projector, 'tokensPerStep': a.tokens_per_step}}, a.to)
    log('projector', n, 'layers →', a.to)
