"""Exports chosen checkpoints as raw float32 tensors + weights.json (+ tokenizer files) under training/out/export/,
and the held-out test sets under eval/data/. `npx tsx scripts/export-modules.ts` then builds the module directories.

  /usr/bin/python3 training/export.py --backbone-s out/ckpt/backbone-S/step700.pt --backbone-l ... [--math-reasoner ...]
"""
import argparse, json, shutil
from common import *

ap = argparse.ArgumentParser()
ap.add_argument('--backbone-s', required=True)
ap.add_argument('--backbone-l', required=True)
ap.add_argument('--math-reasoner')
ap.add_argument('--cipher-reasoner')
ap.add_argument('--policy')
ap.add_argument('--projector')
a = ap.parse_args()
dest = os.path.join(OUT, 'export')
shutil.rmtree(dest, ignore_errors=True)
write_test_sets(os.path.join(ROOT, '..', 'eval', 'data'))
REPO = 'training/ (reasonplug repository), see training/README.md'


def rel(p): return os.path.relpath(os.path.abspath(p), os.path.join(ROOT, '..'))


def hist(ck):
    _, extra = load_ckpt(ck)
    return extra


for size, ck in (('s', a.backbone_s), ('l', a.backbone_l)):
    m, extra = load_ckpt(ck)
    export_llama(m, os.path.join(dest, f'backbone-{size}'), {
        'name': f'toy-backbone-{size}', 'version': '1.0.0', 'kind': 'backbone', 'tasks': ['math', 'cipher'],
        'description': f'Toy Llama backbone {size.upper()} ({param_count(m)} parameters), char-level, pre-trained on a mix of '
                       'multi-step arithmetic with chain of thought and a substitution cipher, stopped while still mediocre.',
        'provenance': {'trainedWith': 'training/pretrain.py (next-token SFT on completions)', 'dataset': 'training/common.py synthetic tasks, held-out test sets excluded',
                       'checkpoint': rel(ck), 'step': extra.get('step'), 'seed': extra.get('seed'), 'parameters': param_count(m),
                       'heldOutAccuracyAtExport': extra.get('acc')}})

for task, ck in (('math', a.math_reasoner), ('cipher', a.cipher_reasoner)):
    if not ck: continue
    m, extra = load_ckpt(ck)
    args = extra.get('args') or {}
    how = ''
    if args.get('from_backbone_layers'): how += f"initialised from toy-backbone-s's embedding and first {args['from_backbone_layers']} layers (LM head zero); "
    if args.get('sft_warmup'): how += f"{args['sft_warmup']} steps of SFT cold start through the composition, then "
    export_llama(m, os.path.join(dest, f'reasoner-{task}'), {
        'name': f'toy-{task}-reasoner', 'version': '1.0.0', 'kind': 'logit-reasoner', 'tasks': [task],
        'description': f'UniR reasoner for the toy {task} task ({param_count(m)} parameters): {how}GRPO against frozen toy-backbone-s; '
                       'its logits are added raw to the backbone\'s.',
        'composition': {'defaultWeight': 1.0, 'mode': 'logits'},
        'provenance': {'trainedWith': 'training/grpo.py (UniR GRPO: policy softmax(z_reasoner + z_backbone), group-normalised advantages)',
                       'backbone': 'toy-backbone-s@1.0.0', 'reward': 'binary exact match of the final answer',
                       'dataset': f'training/common.py {task} (held-out test set excluded)', 'checkpoint': rel(ck),
                       'step': extra.get('step'), 'parameters': param_count(m), 'args': args,
                       'offTaskKl': args.get('offtask_kl'), 'heldOutAccuracyAtExport': extra.get('acc'), 'backboneAccuracy': extra.get('backbone_acc')}})

if a.policy:
    m, extra = load_ckpt(a.policy)
    export_llama(m, os.path.join(dest, 'policy'), {
        'name': 'toy-math-policy', 'version': '1.0.0', 'kind': 'backbone', 'tasks': ['math'],
        'description': 'toy-backbone-s fine-tuned on math: "Q:" prompts get a written chain of thought, "L:" prompts get '
                       '<implicit_thought>N</implicit_thought> markers (one latent step per reasoning step) and the answer; '
                       'trained together with toy-math-projector through the latent rollout.',
        'provenance': {'trainedWith': 'training/latent.py --stage policy (SFT), then --stage joint (with the projector)',
                       'backbone': 'toy-backbone-s@1.0.0', 'checkpoint': rel(a.policy), 'step': extra.get('step')}})
if a.projector:
    d = torch.load(a.projector)
    pdir = os.path.join(dest, 'projector'); os.makedirs(pdir, exist_ok=True)
    tensors = {}
    for i in range(d['config']['layers']):
        for k in ('gate', 'up', 'down'):
            t = d['state'][f'layers.{i}.{k}.weight'].float().contiguous()
            fn = f'layers.{i}.{k}.bin'
            with open(os.path.join(pdir, fn), 'wb') as f: f.write(t.numpy().astype('<f4').tobytes())
            tensors[f'layers.{i}.{k}'] = {'file': fn, 'shape': list(t.shape)}
    with open(os.path.join(pdir, 'weights.json'), 'w') as f:
        json.dump({'format': 'reasonplug-raw-f32-v1', 'kind': 'projector', 'config': d['config'], 'tensors': tensors, 'meta': {
            'name': 'toy-math-projector', 'version': '1.0.0', 'kind': 'latent-projector', 'tasks': ['math'],
            'description': 'LiteReason projector (3 SwiGLU layers) for toy-math-policy: maps the final post-norm hidden state to the next latent input embedding.',
            'latent': {'open': '<implicit_thought>', 'close': '</implicit_thought>', 'maxSteps': 32, 'tokensPerStep': d['extra'].get('tokensPerStep', 8)},
            'provenance': {'trainedWith': 'training/latent.py --stage projector (SFT through the latent rollout, policy frozen), then --stage joint',
                           'backbone': 'toy-math-policy@1.0.0', 'checkpoint': rel(a.projector), 'step': d['extra'].get('step')}}}, f, indent=1)
    write_tokenizer(pdir)
log('exported to', dest)
