#!/usr/bin/env bash
# docs/results/vit_embedded: ViT -> ViT and resnet32 -> ViT, AT + KD at adaptive spots, on the
# embedded Fashion-MNIST subset (all 1,000 test images; the teacher trains on the first 2,000
# training images, the students on the first 1,000), CPU.
# Run from the repository root in the vision venv: bash docs/results/vit_embedded/run.sh RUNS_DIR
set -euo pipefail
out=${1:-runs/vit_embedded}
export PYTHONPATH=docs/results/vit_embedded
common=(data.train_limit=1000 progress=false)
# 1. The ViT teacher (width 64), trained alone for 3 epochs.
if [[ "${SKIP_TEACHER:-0}" != 1 ]]; then
  sakd train quickstart/student model.name=vit_models:vit_teacher epochs=3 data.train_limit=2000 \
    progress=false output_dir="$out/vit_teacher"
fi
# 2. ViT (64) -> ViT (32): AT on the 4 blocks + KD, adaptive spots from the 50/50 start.
sakd distill quickstart teacher.name=vit_models:vit_teacher \
  teacher.checkpoint="$out/vit_teacher/checkpoints/best.pt" model.name=vit_models:vit_student \
  distiller.name=at spots.mode=adaptive spots.homogeneous=false epochs=2 "${common[@]}" \
  output_dir="$out/vit_to_vit"
# 3. The packaged resnet32 teacher (CNN) -> ViT (32): AT bridges its 3 stages to blocks 1-3.
sakd distill quickstart model.name=vit_models:vit_student distiller.name=at \
  spots.mode=adaptive spots.homogeneous=false epochs=2 "${common[@]}" \
  output_dir="$out/resnet_to_vit"
# 4. Where the policy distils, per block and class (test split).
sakd inspect "$out/vit_to_vit" --split test
sakd inspect "$out/resnet_to_vit" --split test
# 5. Controls, run after steps 1-4: the ViT student alone, and both pairs with the AT weight
#    lowered from the published 1000 (set for CNN maps of 8×8 to 32×32 positions) to 50, since on
#    a 4×4 token grid each position's share of the unit-norm attention map is 4-64× larger.
if [[ "${SKIP_CONTROLS:-0}" != 1 ]]; then
  sakd train quickstart/student model.name=vit_models:vit_student epochs=2 "${common[@]}" \
    output_dir="$out/vit_student_alone"
  sakd distill quickstart teacher.name=vit_models:vit_teacher \
    teacher.checkpoint="$out/vit_teacher/checkpoints/best.pt" model.name=vit_models:vit_student \
    distiller.name=at distiller.loss_weight=50 spots.mode=adaptive spots.homogeneous=false \
    epochs=2 "${common[@]}" output_dir="$out/vit_to_vit_at50"
  sakd distill quickstart model.name=vit_models:vit_student distiller.name=at \
    distiller.loss_weight=50 spots.mode=adaptive spots.homogeneous=false epochs=2 "${common[@]}" \
    output_dir="$out/resnet_to_vit_at50"
fi
