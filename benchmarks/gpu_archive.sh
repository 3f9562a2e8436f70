#!/bin/bash
# Paper-scale study cells on a lent GPU machine through the real pipeline (issue 22, items 3 and 4): the bundle
# installed offline, then the archive executor's tasks run with `dvc repro` (lmc/dispatch/archive.py).
#
# Here, before the call (the machine has no network, no DVC, no FFCV):
#   make bundle PYTHON=3.12 BUNDLE_DIR=.gpu/bundle                            # 28.6 MiB of wheels
#   mkdir -p data/raw/MNIST/raw && for f in ../shared/data/mnist/*.gz; do gunzip -c "$f" > data/raw/MNIST/raw/"$(basename "$f" .gz)"; done
#   python -m lmc.dispatch table2 --scale paper --executor archive     # prepares full MNIST here, writes the tasks
#   cp studies/paper/.dispatch/archive/tasks-*.tar.gz .gpu/tasks.tar.gz  # .gpu/ is git-ignored: name it in `carry`
# The call:   bash benchmarks/gpu_archive.sh     (carry: .gpu; writes $OUT/results.tar.gz and logs)
# Here, after: cp <files_at>/results.tar.gz studies/paper/.dispatch/archive/inbox/ &&
#              python -m lmc.dispatch table2 --scale paper --executor archive
set -u
OUT=${OUT:-gpu-out}
LIMIT=${LIMIT:-540}  # seconds for the tasks: what is done by then comes back, the rest is sent again next time
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 -m venv --system-site-packages /tmp/lmc-env || exit 1
/tmp/lmc-env/bin/pip install -q --no-index --no-cache-dir --find-links .gpu/bundle/wheels \
  -r .gpu/bundle/requirements.txt > "$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 1; }
/tmp/lmc-env/bin/dvc --version >> "$OUT/gpu.txt"
export PATH=/tmp/lmc-env/bin:$PATH PYTHONUNBUFFERED=1
# The results archive is rewritten after each task: what finished before the limit comes back (its work folder,
# clones and saved progress, stays on the machine).
timeout "$LIMIT" python -m lmc.dispatch --run-archive .gpu/tasks.tar.gz /tmp/results.tar.gz > "$OUT/run.log" 2>&1
echo "run-archive exit $?" >> "$OUT/run.log"
cp /tmp/results.tar.gz "$OUT/" 2>> "$OUT/run.log"
tail -5 "$OUT/run.log"
