#!/usr/bin/env bash
# VBPR under every training strategy on ml100k-mm, with the public CLI only (benchmarks/README.md,
# sections 3 and 5).
#
#   benchmarks/vbpr_strategies.sh OUT_DIR DATA_DIR
#
# DATA_DIR is an MMRec-format folder of ml100k-mm (`python ../shared/tools/ml100k_to_mmrec.py DIR`, or
# `robustrec ingest`: the same split). Everything is written under OUT_DIR, never inside the repository.
# 1. grid: every strategy x optimizer, 3 epochs (a smoke test: does every pair train?);
# 2. study: one full run per strategy (seed 999, MMRec's early stopping), then noise audits of the item
#    embedding table: absolute sigma^2 in {1e-6, 1e-4, 1e-2} and relative s = 1, R = 10.
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR DATA_DIR}
DATA=${2:?usage: $0 OUT_DIR DATA_DIR}
STRATEGIES=(plain mirror amr sam ssam-f ssam-d amr+mirror)
mkdir -p "$OUT"

echo "| strategy | adam | sgd | rmsprop | adagrad |"
echo "|---|---|---|---|---|"
for strategy in "${STRATEGIES[@]}"; do
  row="| $strategy |"
  for optimizer in adam sgd rmsprop adagrad; do
    run="$OUT/grid/$strategy-$optimizer"
    robustrec train --data "$DATA" --model vbpr --strategy "$strategy" --optimizer "$optimizer" --epochs 3 \
      --out "$run" --no-progress > /dev/null
    row="$row $(python -c "import json,sys; t=json.load(open(sys.argv[1]))['test']; \
print(f\"{t['recall@20']:.4f} / {t['ndcg@5']:.4f}\".replace('0.', '.'))" "$run/metrics.json") |"
  done
  echo "$row"
done

for strategy in "${STRATEGIES[@]}"; do
  robustrec train --data "$DATA" --model vbpr --strategy "$strategy" --seed 999 \
    --out "$OUT/study/vbpr-$strategy" --no-progress > /dev/null
done
robustrec audit "$OUT"/study/vbpr-* --suite noise --severity 1e-6,1e-4,1e-2 --repeats 10 \
  --out "$OUT/results/noise-absolute" --no-progress > /dev/null
robustrec audit "$OUT"/study/vbpr-* --suite noise --suite-param noise_scale=relative --severity 1 --repeats 10 \
  --out "$OUT/results/noise-relative" --no-progress > /dev/null
for part in noise-absolute noise-relative; do
  robustrec report "$OUT/results/$part" --metric recall@20 --out "$OUT/$part-recall@20.md" \
    --plot "$OUT/$part-recall@20.png"
done
python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("\n| strategy | best epoch / run | R@5 | N@5 | R@20 |")
print("|---|---|---:|---:|---:|")
for run in sorted((out / "study").iterdir()):
    m = json.loads((run / "metrics.json").read_text())
    t = m["test"]
    print(f"| {run.name} | {m['best_epoch']} / {m['epochs_run']} | {t['recall@5']:.4f} | {t['ndcg@5']:.4f} | "
          f"{t['recall@20']:.4f} |")
EOF
echo "reports in $OUT"
