#!/usr/bin/env bash
# The robustness study on ml100k-mm recorded in benchmarks/README.md, with the public CLI only.
#
#   benchmarks/ml100k_robustness.sh OUT_DIR [SEEDS]        (default seeds 1,2,3,4,5)
#
# 1. ingest ml100k-mm (MMRec preprocessing; identical split to ../shared/tools/ml100k_to_mmrec.py);
# 2. FREEDOM and BM3, plain and Mirror Gradient (a1 1, a2 .2, beta 3), one run per seed;
# 3. noise audits: absolute sigma^2 in {1e-6 (paper), 1e-4, 1e-2} and relative s in {0.1, 0.5, 1}, R = 10;
# 4. MMGCN plain and mirror (seeds 1,2,3; at most 80 epochs), caption audit with the offline ImageNet captioner,
#    p in {0.01 (paper), 0.1, 0.5, 1}, R = 5;
# 5. reports (markdown + json) and plots.
# Everything is written under OUT_DIR (never inside the repository: ml100k-mm is research-use only).
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR [SEEDS]}
SEEDS=${2:-1,2,3,4,5}
SHARED=${ROBUSTREC_SHARED:-$(dirname "$0")/../../shared}
ML=$SHARED/datasets/ml100k-mm
DATA=$OUT/data/ml100k
mkdir -p "$OUT"

if [ ! -f "$DATA/ml100k.inter" ]; then
  robustrec ingest --ratings "$ML/ratings.csv" --items "$ML/items.csv" --images "$ML/posters" --out "$DATA"
fi

for model in freedom bm3; do
  for strategy in plain mirror; do
    robustrec train --data "$DATA" --model $model --strategy $strategy --seeds "$SEEDS" \
      --out "$OUT/runs/$model-$strategy" --no-progress
  done
done

RUNS=("$OUT"/runs/freedom-*/seed-* "$OUT"/runs/bm3-*/seed-*)
robustrec audit "${RUNS[@]}" --suite noise --severity 1e-6,1e-4,1e-2 --repeats 10 \
  --out "$OUT/results/noise-absolute" --no-progress
robustrec audit "${RUNS[@]}" --suite noise --suite-param noise_scale=relative --severity 0.1,0.5,1 --repeats 10 \
  --out "$OUT/results/noise-relative" --no-progress

for strategy in plain mirror; do
  robustrec train --data "$DATA" --model mmgcn --strategy $strategy --seeds 1,2,3 --epochs 80 \
    --out "$OUT/runs/mmgcn-$strategy" --no-progress
done
robustrec audit "$OUT"/runs/mmgcn-*/seed-* --suite caption --captioner imagenet \
  --severity 0.01,0.1,0.5,1 --repeats 5 --caption-cache "$OUT/caption-cache" \
  --out "$OUT/results/caption" --no-progress

for part in noise-absolute noise-relative caption; do
  for metric in recall@20 recall@5; do
    robustrec report "$OUT/results/$part" --metric $metric --out "$OUT/$part-$metric.md" \
      --plot "$OUT/$part-$metric.png"
  done
  robustrec report "$OUT/results/$part" --format json --out "$OUT/$part.json"
done
echo "reports in $OUT"
