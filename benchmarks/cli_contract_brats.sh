#!/usr/bin/env bash
# The issue's public CLI contract on BraTS with every optional flag left out:
# train on pat0001-3 (FLAIR + T1c) for 10 minutes, predict pat0004, evaluate.
# What train fills in from the data (spacing, patch, loss, decision) is printed in
# train.log. Whole-tumour Dice (labels > 0) goes to wt.txt.
# Usage: benchmarks/cli_contract_brats.sh OUTDIR   (run with the project's venv active)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=${BRATS:-$ROOT/../shared/data/brats2013}
OUT=${1:?usage: cli_contract_brats.sh OUTDIR}
mkdir -p "$OUT"
args=()
for p in pat0001 pat0002 pat0003; do
  args+=(--image "$D/$p/flair.nii.gz" "$D/$p/t1c.nii.gz" --label "$D/$p/labels.nii.gz")
done
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
napari-medseg train "${args[@]}" --out "$OUT/m.pt" --dims 3 --minutes 10 | tee "$OUT/train.log"
napari-medseg predict --model "$OUT/m.pt" --image "$D/pat0004/flair.nii.gz" \
  "$D/pat0004/t1c.nii.gz" --out "$OUT/pred.nii.gz"
napari-medseg evaluate --pred "$OUT/pred.nii.gz" --ref "$D/pat0004/labels.nii.gz" \
  --json "$OUT/eval.json"
python - "$OUT/pred.nii.gz" "$D/pat0004/labels.nii.gz" <<'PY' | tee "$OUT/wt.txt"
import sys
import nibabel as nib
import numpy as np
p, r = (np.rint(np.asarray(nib.load(f).dataobj)) > 0 for f in sys.argv[1:])
print(f"whole-tumour Dice {2 * (p & r).sum() / (p.sum() + r.sum()):.3f}")
PY
