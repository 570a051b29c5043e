#!/usr/bin/env bash
# Issue 23 item 5: the GPU figures in ONE prepared run on a lent device machine (under 6 minutes: each step has a limit).
#
# Here, once (the fast decoders the device image lacks, as wheels for its Python 3.12; .whl/ is ignored):
#     bash benchmarks/gpu_session.sh --wheels
# Then one device call (the run tool), carrying the wheels:
#     run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=420)
# Each step has its own time limit, so one that hangs still leaves the others' figures; everything
# printed also lands in $OUT (steps.txt, detect_gpu.txt, train_cuda.txt, env.txt). Copy the figures
# into benchmarks/README.md (issue 12's and issue 23's GPU sections), naming the card.
set -u -o pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--wheels" ]; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl simplejpeg isal || exit
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
    ls .whl
    exit 0
fi
OUT=${OUT:-$(mktemp -d /tmp/deepsift-gpu.XXXXXX)}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/deepsift-site \
        .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/deepsift-site
fi
step() {  # step NAME SECONDS COMMAND...: one timed step, its output in $OUT/NAME.txt, its status in steps.txt
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "$name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
}
step env 60 python3 -c '
import os, platform, torch, numpy, transformers, onnxruntime
from deepsift import fastdecode
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__, "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)
print("cpus", len(os.sched_getaffinity(0)), "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print("fast decoders", fastdecode.fast_decoders())'
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu N=64 tries the script anywhere (then the figures are not GPU figures)
step detect_gpu 170 python3 benchmarks/bench_detect_gpu.py --device "$DEVICE" --n "${N:-2048}" \
    --workdir /tmp/deepsift-gpu-images
step train_cuda 120 python3 benchmarks/bench_train.py --device "$DEVICE" --quick
echo "figures in $OUT"
