#!/bin/sh
# Reproduces every artifact in examples/modules/: the exact commands and checkpoints used for the committed modules.
# CPU only, Debian's PyTorch (/usr/bin/python3); every run is seeded (--seed 0) and takes minutes on 2 shared cores.
# Run from the repository root:  sh training/run.sh
set -e
PY="nice -n 10 /usr/bin/python3"
cd training
# 1. backbone S (220k parameters): 500 steps of the 50/50 task mix, stopped while mediocre at math
$PY pretrain.py --size S --steps 500 --batch 32 --lr 3e-3 --eval-every 100 --eval-n 50
# 2. backbone L (866k, 4x S): S grown by a function-preserving width doubling, then 200 more steps of the mix
$PY grow.py --from out/ckpt/backbone-S/step500.pt --to out/ckpt/L-init.pt --noise 0.001
$PY pretrain.py --size L --init out/ckpt/L-init.pt --name backbone-L-grown2 --steps 250 --batch 16 --lr 1e-3 --eval-every 25 --eval-n 50
# 3. UniR reasoners against frozen S
#    math: initialised from S's embedding + first 2 layers (LM head zero), SFT cold start through the composition, then GRPO
$PY grpo.py --task math --name reasoner-math-s2 --from-backbone-layers 2 --sft-warmup 300 --offtask-kl 0.05 --lr 2e-3 --grpo-lr 5e-5 \
  --backbone out/ckpt/backbone-S/step500.pt --steps 60 --eval-every 20 --eval-n 50
#    cipher: a 30k-parameter reasoner from scratch, GRPO only
$PY grpo.py --task cipher --backbone out/ckpt/backbone-S/step500.pt --steps 80 --prompts 16 --eval-every 20 --eval-n 100
# 3b. L's checkpoint, chosen on the validation set: best L + math among checkpoints at least as good as S on both tasks
$PY select.py --s out/ckpt/backbone-S/step500.pt --reasoner out/ckpt/reasoner-math-s2/step60.pt \
  out/ckpt/backbone-L-grown2/step25.pt out/ckpt/backbone-L-grown2/step50.pt out/ckpt/backbone-L-grown2/step75.pt \
  out/ckpt/backbone-L-grown2/step100.pt out/ckpt/backbone-L-grown2/step125.pt out/ckpt/backbone-L-grown2/step150.pt \
  out/ckpt/backbone-L-grown2/step175.pt out/ckpt/backbone-L-grown2/step200.pt out/ckpt/backbone-L-grown2/step225.pt \
  out/ckpt/backbone-L-grown2/step250.pt
# 4. LiteReason: policy (S fine-tuned: CoT for "Q:", markers for "L:"), projector with the policy frozen, then both together
$PY latent.py --stage policy --backbone out/ckpt/backbone-S/step500.pt --steps 200 --batch 32 --lr 1e-3 --eval-every 50 --eval-n 50
$PY latent.py --stage projector --policy out/ckpt/policy/step200.pt --steps 300 --batch 32 --lr 2e-3 --eval-every 50 --eval-n 60
$PY latent.py --stage projector --name projector2 --init-projector out/ckpt/projector/step250.pt --policy out/ckpt/policy/step200.pt \
  --steps 400 --batch 32 --lr 1e-3 --eval-every 100 --eval-n 60
$PY latent.py --stage joint --name joint --policy out/ckpt/policy/step200.pt --init-projector out/ckpt/projector2/step400.pt \
  --steps 300 --batch 32 --lr 1e-3 --eval-every 50 --eval-n 60
$PY latent.py --stage joint --name joint2 --policy out/ckpt/joint/policy-step300.pt --init-projector out/ckpt/joint/projector-step300.pt \
  --steps 500 --batch 32 --lr 1e-3 --eval-every 100 --eval-n 60
$PY latent.py --stage joint --name joint3 --aux-intermediate 1.0 --policy out/ckpt/joint2/policy-step500.pt \
  --init-projector out/ckpt/joint2/projector-step500.pt --steps 400 --batch 32 --lr 1e-3 --eval-every 100 --eval-n 60
$PY latent.py --stage joint --name joint4 --aux-intermediate 1.0 --policy out/ckpt/joint3/policy-step400.pt \
  --init-projector out/ckpt/joint3/projector-step400.pt --steps 600 --batch 32 --lr 3e-4 --eval-every 150 --eval-n 100 --threads 2
#    (the committed run took joint4 from the then-committed modules instead of re-running the steps above:
#     /usr/bin/python3 import_onnx.py --policy ../examples/modules/toy-math-policy/model.onnx --to out/ckpt/joint4/policy-step600.pt
#     /usr/bin/python3 import_onnx.py --projector ../examples/modules/toy-math-projector/model.onnx --to out/ckpt/joint4/projector-step600.pt
#     which reproduces their numbers exactly: latent 40.5%, cot 98.5% on the held-out set)
# 4b. the latent format learned as text first: after the marker (N = 2 x steps) the policy writes only the intermediate
#     results, two digits each, then the answer; "Q:" keeps the chain-of-thought loss. Then a low-lr polish.
$PY latent.py --stage compress --name compress2 --latent-per-step 2 --policy out/ckpt/joint4/policy-step600.pt \
  --steps 1500 --batch 64 --cot-batch 16 --lr 2e-3 --eval-every 100 --eval-n 200 --threads 1
$PY latent.py --stage compress --name compress3 --latent-per-step 2 --policy out/ckpt/compress2/step800.pt \
  --steps 400 --batch 32 --cot-batch 32 --lr 3e-4 --eval-every 100 --eval-n 200 --threads 1 --seed 1
# 4c. projector, policy frozen: warm start (MSE to the embedding of the token the policy reads next at each digit
#     position), then LiteReason's SFT through the latent rollout (loss on the answer, 2 latent steps per reasoning step)
$PY latent.py --stage projector --name projector-c3-1e-4 --latent-per-step 2 --policy out/ckpt/compress3/step300.pt \
  --distill-steps 400 --distill-lr 3e-3 --steps 300 --lr 1e-4 --batch 32 --eval-every 100 --eval-n 200 --threads 1
#    held-out check in Python (the same greedy loop as the engine: the policy writes its marker, then N latent steps)
$PY latent.py --stage projector --eval-only --latent-per-step 2 --policy out/ckpt/compress3/step300.pt \
  --init-projector out/ckpt/projector-c3-1e-4/step700.pt
# 5. export: raw float32 tensors + the held-out sets (eval/data/), then module directories through the project's builders
/usr/bin/python3 export.py --backbone-s out/ckpt/backbone-S/step500.pt --backbone-l out/ckpt/backbone-L-grown2/step150.pt \
  --math-reasoner out/ckpt/reasoner-math-s2/step60.pt --cipher-reasoner out/ckpt/reasoner-cipher/step80.pt \
  --policy out/ckpt/compress3/step300.pt --projector out/ckpt/projector-c3-1e-4/step700.pt
#    (the policy/projector re-export alone, leaving the other module directories and eval/data/ as they are:
#     /usr/bin/python3 export.py --only policy,projector --policy out/ckpt/compress3/step300.pt --projector out/ckpt/projector-c3-1e-4/step700.pt)
cd ..
npx tsx scripts/export-modules.ts
npx tsx eval/run.ts --json
