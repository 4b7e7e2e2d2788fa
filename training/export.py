"""Exports chosen checkpoints as raw float32 tensors + weights.json (+ tokenizer files) under training/out/export/,
and the held-out test sets under eval/data/. `npx tsx scripts/export-modules.ts` then builds the module directories.

  /usr/bin/python3 training/export.py --backbone-s out/ckpt/backbone-S/step700.pt --backbone-l ... [--math-reasoner ...]
"""
import argparse, json, re, shutil
from common import *

ap = argparse.ArgumentParser()
ap.add_argument('--backbone-s')
ap.add_argument('--backbone-l')
ap.add_argument('--math-reasoner')
ap.add_argument('--cipher-reasoner')
ap.add_argument('--policy')
ap.add_argument('--projector')
ap.add_argument('--only', help='comma-separated subset of s,l,math-reasoner,cipher-reasoner,policy,projector to export '
                               '(the others are left out of training/out/export/, so scripts/export-modules.ts leaves their module '
                               'directories as they are); the held-out sets in eval/data/ are then not rewritten')
ap.add_argument('--prefix', default='toy', help='module names are <prefix>-backbone-s, <prefix>-math-reasoner, ... (default toy)')
ap.add_argument('--version', default='1.0.0', help='the modules\' version (default 1.0.0): a retrained module published beside '
                                                  'an earlier one needs a version of its own')
a = ap.parse_args()
PIECES = ('s', 'l', 'math-reasoner', 'cipher-reasoner', 'policy', 'projector')
ONLY = set(a.only.split(',')) if a.only else None
if ONLY is not None and ONLY - set(PIECES): ap.error(f'--only {",".join(sorted(ONLY - set(PIECES)))}: not among {",".join(PIECES)}')
if not re.fullmatch(r'\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?', a.version): ap.error(f'--version {a.version}: a semver version such as 1.0.1')
NAME = lambda piece: f'{a.prefix}-{piece}'
AT = lambda piece: f'{NAME(piece)}@{a.version}'
want = lambda what: ONLY is None or what in ONLY
if ONLY is None and not (a.backbone_s and a.backbone_l): ap.error('--backbone-s and --backbone-l are required unless --only is given')
for what, ck in (('s', a.backbone_s), ('l', a.backbone_l), ('math-reasoner', a.math_reasoner), ('cipher-reasoner', a.cipher_reasoner),
                 ('policy', a.policy), ('projector', a.projector)):
    if ONLY is not None and what in ONLY and not ck: ap.error(f'--only {what} needs its checkpoint')
dest = os.path.join(OUT, 'export')
shutil.rmtree(dest, ignore_errors=True)
if ONLY is None: write_test_sets(os.path.join(ROOT, '..', 'eval', 'data'))
REPO = 'training/ (reasonplug repository), see training/README.md'


def rel(p): return os.path.relpath(os.path.abspath(p), os.path.join(ROOT, '..'))


def backbone_of(extra):
    """The module a reasoner was trained against: the backbone exported beside it whose checkpoint it names, else that checkpoint."""
    path = extra.get('backbone')
    if not path: return AT('backbone-s')
    trained = os.path.abspath(os.path.join(ROOT, path))
    for size, ck in (('s', a.backbone_s), ('l', a.backbone_l)):
        if ck and os.path.abspath(ck) == trained: return AT(f'backbone-{size}')
    return f'the checkpoint {path}'


for size, ck in (('s', a.backbone_s), ('l', a.backbone_l)):
    if not want(size) or not ck: continue
    m, extra = load_ckpt(ck)
    export_llama(m, os.path.join(dest, f'backbone-{size}'), {
        'name': NAME(f'backbone-{size}'), 'version': a.version, 'kind': 'backbone', 'tasks': ['math', 'cipher'],
        'description': f'Toy Llama backbone {size.upper()} ({param_count(m)} parameters), char-level, pre-trained on a mix of '
                       'multi-step arithmetic with chain of thought and a substitution cipher, stopped while still mediocre.',
        'provenance': {'trainedWith': 'training/pretrain.py (next-token SFT on completions)', 'dataset': 'training/common.py synthetic tasks, held-out test sets excluded',
                       'checkpoint': rel(ck), 'step': extra.get('step'), 'seed': extra.get('seed'), 'parameters': param_count(m),
                       'heldOutAccuracyAtExport': extra.get('acc')}})

for task, ck in (('math', a.math_reasoner), ('cipher', a.cipher_reasoner)):
    if not ck or not want(f'{task}-reasoner'): continue
    m, extra = load_ckpt(ck)
    args = extra.get('args') or {}
    backbone = backbone_of(extra)
    how = ''
    if args.get('from_backbone_layers'): how += f"initialised from the backbone's embedding and first {args['from_backbone_layers']} layers (LM head zero); "
    if args.get('sft_warmup'): how += f"{args['sft_warmup']} steps of SFT cold start through the composition, then "
    export_llama(m, os.path.join(dest, f'reasoner-{task}'), {
        'name': NAME(f'{task}-reasoner'), 'version': a.version, 'kind': 'logit-reasoner', 'tasks': [task],
        'description': f'UniR reasoner for the toy {task} task ({param_count(m)} parameters): {how}GRPO against frozen {backbone}; '
                       'its logits are added raw to the backbone\'s.',
        'composition': {'defaultWeight': 1.0, 'mode': 'logits'},
        'provenance': {'trainedWith': 'training/grpo.py (UniR GRPO: policy softmax(z_reasoner + z_backbone), group-normalised advantages)',
                       'backbone': backbone, 'reward': 'binary exact match of the final answer',
                       'dataset': f'training/common.py {task} (held-out test set excluded)', 'checkpoint': rel(ck),
                       'step': extra.get('step'), 'parameters': param_count(m), 'args': args,
                       'offTaskKl': args.get('offtask_kl'), 'heldOutAccuracyAtExport': extra.get('acc'), 'backboneAccuracy': extra.get('backbone_acc')}})

if a.policy and want('policy'):
    m, extra = load_ckpt(a.policy)
    stage = (extra.get('args') or {}).get('stage')
    # (the documented pipeline ends with --stage compress; a policy exported after an earlier stage says so)
    trained = ('training/latent.py --stage policy (SFT), --stage joint (with a first projector), then --stage compress (the latent '
               'positions learned as a compressed written chain, 2 tokens per step)') if stage in (None, 'compress') else f'training/latent.py --stage {stage}'
    export_llama(m, os.path.join(dest, 'policy'), {
        'name': NAME('math-policy'), 'version': a.version, 'kind': 'backbone', 'tasks': ['math'],
        'description': f'{NAME("backbone-s")} fine-tuned on math: "Q:" prompts get a written chain of thought, "L:" prompts get '
                       '<implicit_thought>N</implicit_thought> markers (two latent steps per reasoning step) and the answer, '
                       f'the latent steps computed with {NAME("math-projector")}.',
        'provenance': {'trainedWith': trained,
                       'backbone': AT('backbone-s'), 'checkpoint': rel(a.policy), 'step': extra.get('step'),
                       'validationCotAccuracyAtExport': extra.get('cot_acc', extra.get('acc')),
                       'validationCompressedTextAccuracyAtExport': extra.get('compressed_text_acc'), 'args': extra.get('args')}})
if a.projector and want('projector'):
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
            'name': NAME('math-projector'), 'version': a.version, 'kind': 'latent-projector', 'tasks': ['math'],
            'description': f'LiteReason projector (3 SwiGLU layers) for {NAME("math-policy")}: maps the final post-norm hidden state to the next latent input embedding.',
            'latent': {'open': '<implicit_thought>', 'close': '</implicit_thought>', 'maxSteps': 32, 'tokensPerStep': d['extra'].get('tokensPerStep', 8)},
            'provenance': {'trainedWith': 'training/latent.py --stage projector --distill-steps (warm start on the policy\'s compressed chain), '
                                          'then SFT through the latent rollout, policy frozen',
                           'backbone': AT('math-policy'), 'checkpoint': rel(a.projector), 'step': d['extra'].get('step'),
                           'latentStepsPerReasoningStep': 8 // d['extra'].get('tokensPerStep', 8),
                           'validationAccuracyAtExport': d['extra'].get('acc')}}}, f, indent=1)
    write_tokenizer(pdir)
log('exported to', dest)
