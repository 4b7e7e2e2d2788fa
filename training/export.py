"""Exports chosen checkpoints as raw float32 tensors + weights.json (+ tokenizer files) under training/out/export/,
and the held-out test sets under eval/data/. `npx tsx scripts/export-modules.ts` then builds the module directories.

  /usr/bin/python3 training/export.py --backbone-s out/ckpt/backbone-S/step700.pt --backbone-l ... [--math-reasoner ...]

Every flag is checked, and every checkpoint opened, before anything is written; the export is written beside the
previous one and replaces it only once whole, so a failed run leaves training/out/export/ and eval/data/ as they were.
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
ap.add_argument('--backbone-ref', metavar='NAME@VERSION',
                help='the published module the exported reasoners, policy or projector were trained against, where it is not '
                     'exported in this run (a projector\'s is its policy); without it their provenance names the checkpoint '
                     'they recorded')
a = ap.parse_args()
PIECES = ('s', 'l', 'math-reasoner', 'cipher-reasoner', 'policy', 'projector')
CKPT = {'s': a.backbone_s, 'l': a.backbone_l, 'math-reasoner': a.math_reasoner, 'cipher-reasoner': a.cipher_reasoner,
        'policy': a.policy, 'projector': a.projector}
FLAG = {p: '--' + {'s': 'backbone-s', 'l': 'backbone-l'}.get(p, p) for p in PIECES}
MODULE = {'s': 'backbone-s', 'l': 'backbone-l', 'math-reasoner': 'math-reasoner', 'cipher-reasoner': 'cipher-reasoner',
          'policy': 'math-policy', 'projector': 'math-projector'}
ONLY = set(a.only.split(',')) if a.only else None
if ONLY is not None and ONLY - set(PIECES): ap.error(f'--only {",".join(sorted(ONLY - set(PIECES)))}: not among {",".join(PIECES)}')
want = lambda what: ONLY is None or what in ONLY
if ONLY is None and not (a.backbone_s and a.backbone_l): ap.error('--backbone-s and --backbone-l are required unless --only is given')
for what, ck in CKPT.items():
    if ONLY is not None and what in ONLY and not ck: ap.error(f'--only {what} needs its checkpoint')
    # (a backbone given only to be named in provenance would be named at a version that was never published)
    if ck and not want(what): ap.error(f'{FLAG[what]}: not exported with --only {a.only}; add {what} to --only, or name the '
                                       'published module with --backbone-ref')
EXPORTED = [p for p in PIECES if CKPT[p]]

# The manifest's rules (packages/core/src/modules/manifest.ts): an OCI repository path component, and strict semver.
NAME_RE = re.compile(r'[a-z0-9]+(?:[._-][a-z0-9]+)*')
NUM, ID = r'(?:0|[1-9][0-9]*)', r'(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][a-zA-Z0-9-]*)'
SEMVER_RE = re.compile(rf'{NUM}\.{NUM}\.{NUM}(?:-{ID}(?:\.{ID})*)?(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?')


def name_problem(name):
    if len(name) > 128: return 'longer than 128 characters'
    if not NAME_RE.fullmatch(name): return 'not lower-case letters and digits separated by single ".", "_" or "-"'


def version_problem(v):
    # (semver's own limits: 256 characters, numbers JavaScript holds exactly)
    if len(v) > 256 or not SEMVER_RE.fullmatch(v) or any(int(n) > 2 ** 53 - 1 for n in re.split(r'[.+-]', v)[:3]):
        return 'not a semantic version such as 1.0.1 or 2.1.0-beta.1 (no leading zeros)'


if version_problem(a.version): ap.error(f'--version {a.version}: {version_problem(a.version)}')
for p in EXPORTED:
    name = f'{a.prefix}-{MODULE[p]}'
    if name_problem(name): ap.error(f'--prefix {a.prefix}: the module name {name} is {name_problem(name)}')
if a.backbone_ref:
    ref_name, _, ref_version = a.backbone_ref.rpartition('@')
    if not ref_name or name_problem(ref_name) or version_problem(ref_version):
        ap.error(f'--backbone-ref {a.backbone_ref}: expected NAME@VERSION, a module name and its semantic version')
NAME = lambda piece: f'{a.prefix}-{piece}'
AT = lambda piece: f'{NAME(piece)}@{a.version}'


def open_ckpt(what):
    """The checkpoint given for `what`, refused here (argparse-style) when it is missing or of the wrong kind."""
    ck = CKPT[what]
    if not os.path.isfile(ck): ap.error(f'{FLAG[what]} {ck}: no such file')
    try: d = torch.load(ck)
    except Exception as e: ap.error(f'{FLAG[what]} {ck}: not a checkpoint ({e})')
    config = d.get('config') if isinstance(d, dict) else None
    is_projector = isinstance(config, dict) and 'innerSize' in config
    if not isinstance(config, dict) or 'state' not in d or is_projector != (what == 'projector'):
        ap.error(f'{FLAG[what]} {ck}: ' + ('not a projector checkpoint (training/latent.py --stage projector)' if what == 'projector'
                                          else 'not a Llama checkpoint (backbone, reasoner or policy)'))
    extra = d.get('extra') or {}
    task = (extra.get('args') or {}).get('task')
    if what.endswith('-reasoner') and task and task != what.split('-')[0]: ap.error(f'{FLAG[what]} {ck}: a {task} reasoner')
    if what == 'projector':
        if 'tokensPerStep' not in extra: ap.error(f'{FLAG[what]} {ck}: records no tokensPerStep')
        return d, extra
    m = Llama(config); m.load_state_dict(d['state']); m.eval()
    return m, extra


loaded = {p: open_ckpt(p) for p in EXPORTED}


def rel(p): return os.path.relpath(os.path.abspath(p), os.path.join(ROOT, '..'))


# A module is named NAME@VERSION only when it goes out in this run: a version given here for the one exported
# beside another says nothing of which versions of the other were ever published.
IN_RUN = {os.path.abspath(CKPT[p]): AT(MODULE[p]) for p in ('s', 'l', 'policy') if CKPT[p]}


def recorded_against(what):
    """The checkpoint (relative to training/, as the training scripts record it) that piece `what` was trained against."""
    extra = loaded[what][1]
    return extra.get('policy') if what == 'projector' else extra.get('backbone')


def in_run(recorded): return recorded and IN_RUN.get(os.path.abspath(os.path.join(ROOT, recorded)))


UNRESOLVED = {p: recorded_against(p) for p in EXPORTED if p not in ('s', 'l') and not in_run(recorded_against(p))}
if a.backbone_ref:
    if not UNRESOLVED: ap.error(f'--backbone-ref {a.backbone_ref}: no exported piece needs it (each one\'s is exported in this run)')
    if len({rec or ('unrecorded', p) for p, rec in UNRESOLVED.items()}) > 1:
        ap.error(f'--backbone-ref {a.backbone_ref}: {", ".join(UNRESOLVED)} were not trained against the same recorded checkpoint; '
                 'export them in separate runs')


def trained_against(what):
    """(provenance value, words for the description) of what `what` was trained against; (None, None) when unrecorded."""
    recorded = recorded_against(what)
    at = in_run(recorded) or a.backbone_ref
    if at: return at, at.rpartition('@')[0]
    shown = recorded and f'the checkpoint {rel(os.path.join(ROOT, recorded))}'
    return (shown, shown) if shown else (None, None)


def imported(extra):
    """How training/import_onnx.py's checkpoints say where they come from."""
    return f'{extra.get("module") or extra["importedFrom"]}, read back from ONNX by training/import_onnx.py'


WORDS = {1: 'one', 2: 'two', 3: 'three', 4: 'four'}


def policy_training(extra):
    """trainedWith of a policy, from the stages its checkpoint carries (training/latent.py records them)."""
    if 'importedFrom' in extra: return imported(extra)
    args = extra.get('args') or {}
    if not (extra.get('stages') or args.get('stage')): return 'not recorded by its checkpoint'
    # (checkpoints written before latent.py carried its stages over record only their own)
    stages = extra.get('stages') or [{'stage': args['stage'], 'from': args.get('backbone') or args.get('policy'),
                                       'latentPerStep': args.get('latent_per_step')}]
    said = {'policy': '--stage policy (SFT)', 'joint': '--stage joint (with a first projector)', 'curriculum': '--stage curriculum',
            'projector': '--stage projector'}
    phrases = []
    for s in stages:
        p = said.get(s['stage'], f'--stage {s["stage"]}')
        if s['stage'] == 'compress':
            p = f'--stage compress (the latent positions learned as a compressed written chain, {s["latentPerStep"]} tokens per step)'
        if not phrases or phrases[-1] != p: phrases.append(p)
    text = 'training/latent.py ' + (', '.join(phrases[:-1]) + ', then ' if len(phrases) > 1 else '') + phrases[-1]
    if stages[0]['stage'] != 'policy' and stages[0]['from']:
        text += f' from {rel(os.path.join(ROOT, stages[0]["from"]))} (its earlier training not recorded)'
    return text


def projector_training(extra):
    if 'importedFrom' in extra: return imported(extra)
    args = extra.get('args') or {}
    stage, distill = args.get('stage'), args.get('distill_steps') or 0
    if not stage: return 'not recorded by its checkpoint'
    if stage != 'projector': return f'training/latent.py --stage {stage} (trained together with the policy through the latent rollout)'
    warm = 'training/latent.py --stage projector --distill-steps (warm start on the policy\'s compressed chain)'
    if distill and extra.get('step', 0) <= distill: return warm + ' only, policy frozen'
    sft = 'SFT through the latent rollout, policy frozen'
    text = f'{warm}, then {sft}' if distill else f'training/latent.py --stage projector: {sft}'
    return text + (f', continued from {rel(os.path.join(ROOT, args["init_projector"]))}' if args.get('init_projector') else '')


def export_all(dest):
    for size in ('s', 'l'):
        if size not in loaded: continue
        m, extra = loaded[size]
        init = (extra.get('args') or {}).get('init')
        export_llama(m, os.path.join(dest, f'backbone-{size}'), {
            'name': NAME(f'backbone-{size}'), 'version': a.version, 'kind': 'backbone', 'tasks': ['math', 'cipher'],
            'description': f'Toy Llama backbone {size.upper()} ({param_count(m)} parameters), char-level, pre-trained on a mix of '
                           'multi-step arithmetic with chain of thought and a substitution cipher, stopped while still mediocre.',
            'provenance': {'trainedWith': imported(extra) if 'importedFrom' in extra else
                           'training/pretrain.py (next-token SFT on completions)' + (f', continued from {rel(os.path.join(ROOT, init))}' if init else ''),
                           'dataset': 'training/common.py synthetic tasks, held-out test sets excluded',
                           'checkpoint': rel(CKPT[size]), 'step': extra.get('step'), 'seed': extra.get('seed'), 'parameters': param_count(m),
                           'heldOutAccuracyAtExport': extra.get('acc')}})

    for task in ('math', 'cipher'):
        if f'{task}-reasoner' not in loaded: continue
        m, extra = loaded[f'{task}-reasoner']
        args = extra.get('args') or {}
        backbone, _ = trained_against(f'{task}-reasoner')
        how = ''
        if args.get('from_backbone_layers'): how += f"initialised from the backbone's embedding and first {args['from_backbone_layers']} layers (LM head zero); "
        if args.get('sft_warmup'): how += f"{args['sft_warmup']} steps of SFT cold start through the composition, then "
        export_llama(m, os.path.join(dest, f'reasoner-{task}'), {
            'name': NAME(f'{task}-reasoner'), 'version': a.version, 'kind': 'logit-reasoner', 'tasks': [task],
            'description': f'UniR reasoner for the toy {task} task ({param_count(m)} parameters): {how}GRPO against '
                           f'{"frozen " + backbone if backbone else "a frozen backbone its checkpoint does not record"}; its logits are added raw to the backbone\'s.',
            'composition': {'defaultWeight': 1.0, 'mode': 'logits'},
            'provenance': {'trainedWith': imported(extra) if 'importedFrom' in extra else
                           'training/grpo.py (UniR GRPO: policy softmax(z_reasoner + z_backbone), group-normalised advantages)',
                           **({'backbone': backbone} if backbone else {}), 'reward': 'binary exact match of the final answer',
                           'dataset': f'training/common.py {task} (held-out test set excluded)', 'checkpoint': rel(CKPT[f'{task}-reasoner']),
                           'step': extra.get('step'), 'parameters': param_count(m), 'args': args,
                           'offTaskKl': args.get('offtask_kl'), 'heldOutAccuracyAtExport': extra.get('acc'), 'backboneAccuracy': extra.get('backbone_acc')}})

    if 'policy' in loaded:
        m, extra = loaded['policy']
        backbone, words = trained_against('policy')
        K = (extra.get('args') or {}).get('latent_per_step')
        per_step = f' ({WORDS.get(K, K)} latent step{"s" if K != 1 else ""} per reasoning step)' if K else ''
        projector = NAME('math-projector') if 'projector' in loaded else 'a latent projector'
        subject = words or 'a backbone'
        if subject.startswith(('the ', 'a ')): subject = subject[0].upper() + subject[1:]  # (a module name stays as written)
        export_llama(m, os.path.join(dest, 'policy'), {
            'name': NAME('math-policy'), 'version': a.version, 'kind': 'backbone', 'tasks': ['math'],
            'description': f'{subject} fine-tuned on math: "Q:" prompts get a written chain of thought, "L:" prompts get '
                           f'<implicit_thought>N</implicit_thought> markers{per_step} and the answer, '
                           f'the latent steps computed with {projector}.',
            'provenance': {'trainedWith': policy_training(extra),
                           **({'backbone': backbone} if backbone else {}), 'checkpoint': rel(CKPT['policy']), 'step': extra.get('step'),
                           'validationCotAccuracyAtExport': extra.get('cot_acc', extra.get('acc')),
                           'validationCompressedTextAccuracyAtExport': extra.get('compressed_text_acc'), 'args': extra.get('args')}})
    if 'projector' in loaded:
        d, extra = loaded['projector']
        policy, words = trained_against('projector')
        pdir = os.path.join(dest, 'projector'); os.makedirs(pdir, exist_ok=True)
        tensors = {}
        for i in range(d['config']['layers']):
            for k in ('gate', 'up', 'down'):
                t = d['state'][f'layers.{i}.{k}.weight'].float().contiguous()
                fn = f'layers.{i}.{k}.bin'
                with open(os.path.join(pdir, fn), 'wb') as f: f.write(t.numpy().astype('<f4').tobytes())
                tensors[f'layers.{i}.{k}'] = {'file': fn, 'shape': list(t.shape)}
        tps = extra['tokensPerStep']
        with open(os.path.join(pdir, 'weights.json'), 'w') as f:
            json.dump({'format': 'reasonplug-raw-f32-v1', 'kind': 'projector', 'config': d['config'], 'tensors': tensors, 'meta': {
                'name': NAME('math-projector'), 'version': a.version, 'kind': 'latent-projector', 'tasks': ['math'],
                'description': f'LiteReason projector ({d["config"]["layers"]} SwiGLU layers) for {words or "a policy its checkpoint does not record"}: '
                               'maps the final post-norm hidden state to the next latent input embedding.',
                # (an imported projector carries its module's latent fields; tokensPerStep is the checkpoint's own)
                'latent': {'open': '<implicit_thought>', 'close': '</implicit_thought>', 'maxSteps': 32, **extra.get('latent', {}), 'tokensPerStep': tps},
                'provenance': {'trainedWith': projector_training(extra),
                               **({'backbone': policy} if policy else {}), 'checkpoint': rel(CKPT['projector']), 'step': extra.get('step'),
                               'latentStepsPerReasoningStep': 8 // tps,
                               'validationAccuracyAtExport': extra.get('acc')}}}, f, indent=1)
        write_tokenizer(pdir)


dest = os.path.join(OUT, 'export')
tmp = f'{dest}.{os.getpid()}.tmp'
shutil.rmtree(tmp, ignore_errors=True); os.makedirs(tmp)
try:
    export_all(tmp)
    # The previous export goes only once the new one is whole (a directory cannot be renamed over a full one).
    old = tmp + '.old'
    if os.path.exists(dest): os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
if ONLY is None: write_test_sets(os.path.join(ROOT, '..', 'eval', 'data'))
log('exported to', dest)
