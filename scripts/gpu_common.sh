# Sourced by the GPU session scripts (gpu_session.sh, gpu_hf_guided.sh), run from the repo root: where the data, the
# runs ($R) and what comes back ($OUT) are, what the machine was ($R/machine.txt), and `job NAME LIMIT CMD...`, one
# training stopped after LIMIT seconds, its log in $R/NAME.log and its exit status and time in $R/status.txt.
# DRY=1: the data is a small synthetic set made here, so the steps can be checked on the CPU first.
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
D=${DATA:-.gpu/data}
R=${RUNS:-/tmp/gpu-runs}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$R" "$OUT"
if [ "${DRY:-0}" = 1 ]; then
  D=$R/synth; [ -d "$D" ] || python3 -m brisc.synth_cli "$D" --per-class 12 > /dev/null
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  nproc; } > "$R/machine.txt"
job() { local name=$1 limit=$2; shift 2; local t0=$SECONDS; timeout "$limit" "$@" > "$R/$name.log" 2>&1
        echo "$name rc=$? $((SECONDS - t0))s" >> "$R/status.txt"; }
