"""Reads a committed module's model.onnx back into a torch checkpoint (the inverse of export.py + scripts/export-modules.ts),
so training can continue from the committed weights when training/out/ is gone. The builders store matrices
transposed as `<name>.T` ([in, out]); norms and the embedding as they are. A projector's latent fields
(tokensPerStep, the markers) are read from the reasonplug.json beside its model.onnx, unless --tokens-per-step is given.

  /usr/bin/python3 training/import_onnx.py --policy ../examples/modules/toy-math-policy/model.onnx --to out/ckpt/joint4/policy-step600.pt
  /usr/bin/python3 training/import_onnx.py --projector ../examples/modules/toy-math-projector/model.onnx --to out/ckpt/joint4/projector-step600.pt
"""
import argparse
import onnx
from onnx import numpy_helper
from common import *

ap = argparse.ArgumentParser()
ap.add_argument('--policy'); ap.add_argument('--projector'); ap.add_argument('--to', required=True)
ap.add_argument('--tokens-per-step', type=int, help='projector: the discrete tokens one latent step stood for in training '
                                                    '(default: latent.tokensPerStep of the reasonplug.json beside the .onnx)')
a = ap.parse_args()
if bool(a.policy) == bool(a.projector): ap.error('one of --policy or --projector (each goes to its own --to)')
if a.tokens_per_step is not None and a.tokens_per_step <= 0: ap.error(f'--tokens-per-step {a.tokens_per_step}: a positive number')
onnx_path = a.policy or a.projector
flag = '--policy' if a.policy else '--projector'
if not os.path.isfile(onnx_path): ap.error(f'{flag} {onnx_path}: no such file')


def manifest_beside(path):
    """The reasonplug.json of the module directory whose model is `path`, or None."""
    at = os.path.join(os.path.dirname(os.path.abspath(path)), 'reasonplug.json')
    if not os.path.isfile(at): return None
    with open(at) as f: m = json.load(f)
    model = os.path.join(os.path.dirname(at), ((m.get('files') or {}).get('model') or {}).get('path', ''))
    return m if os.path.abspath(model) == os.path.abspath(path) else None


manifest = manifest_beside(onnx_path) or {}
if manifest and (manifest.get('kind') == 'latent-projector') != bool(a.projector):
    ap.error(f'{flag} {onnx_path}: the model of {manifest["name"]}, a {manifest["kind"]}')
# (where the checkpoint came from, for training/export.py's provenance)
source = {'importedFrom': onnx_path, **({'module': f'{manifest["name"]}@{manifest["version"]}'} if manifest else {})}
latent = manifest.get('latent') or {}
tokens_per_step = a.tokens_per_step or latent.get('tokensPerStep')
if a.projector and not tokens_per_step:
    ap.error(f'--projector {onnx_path}: no reasonplug.json beside it gives latent.tokensPerStep; give --tokens-per-step')


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
    save_ckpt(m, a.to, source)
    log('policy', param_count(m), 'parameters →', a.to)
if a.projector:
    w = inits(a.projector)
    n = sum(1 for k in w if k.endswith('.gate.T')); H, I = w['layers.0.gate.T'].shape
    state = {f'layers.{i}.{k}.weight': w[f'layers.{i}.{k}.T'].t().contiguous() for i in range(n) for k in ('gate', 'up', 'down')}
    os.makedirs(os.path.dirname(a.to), exist_ok=True)
    torch.save({'config': {'hiddenSize': int(H), 'innerSize': int(I), 'layers': n, 'vocabSize': V}, 'state': state,
                'extra': {**source, 'tokensPerStep': tokens_per_step, 'latent': {k: v for k, v in latent.items() if k != 'tokensPerStep'}}}, a.to)
    log('projector', n, 'layers →', a.to)
