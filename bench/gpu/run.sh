#!/usr/bin/env bash
# The GPU validation run (bench/gpu.md): one command, at most 6 minutes (installs included), so a
# rerun fits in the same 15-minute device lease.
#
#   here, once:        bash bench/gpu/fetch-wheels.sh            # wheels of bench/gpu/wheels.txt -> .gpuwheels/
#   on the GPU machine: bash bench/gpu/run.sh                    # device run, carry [".gpuwheels"], timeout_s 390
#   anywhere (CPU):    bash bench/gpu/run.sh --dry-run           # the same logic, tiny sizes, no installs
#
# Results go to $OUT (default bench/gpu/out/): results.json, results.md, run.log, gsplat-build.log, pytest.log.
# On the GPU machine the carried wheels are installed into /tmp (nothing is downloaded there): gsplat
# into a folder of its own (VD_GPU_GSPLAT_SITE), whose kernels bench/gpu/run.py compiles in the
# background with that machine's nvcc (MAX_JOBS=16, TORCH_CUDA_ARCH_LIST=9.0); vd itself is laid
# out from this tree as it installs (vd.commands <- commands/, vd.cache <- cache/).
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT="${OUT:-$PWD/bench/gpu/out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
start=$(date +%s)
total_s="${VD_GPU_TOTAL_S:-360}"  # the whole script (bench/gpu/run.py TOTAL_S); the device call's timeout is 390 s

for arg in "$@"; do
  if [[ "$arg" == "--dry-run" ]]; then
    exec "$PY" bench/gpu/run.py --budget-s 200 "$@"  # logic only: room for a loaded CPU (two test workers)
  fi
done

if ! compgen -G ".gpuwheels/*.whl" >/dev/null; then
  echo "error: no wheels in .gpuwheels/; run bash bench/gpu/fetch-wheels.sh where PyPI is reachable and carry .gpuwheels" >&2
  exit 2
fi
site=/tmp/vd-gpu-site gsite=/tmp/vd-gpu-gsplat src=/tmp/vd-gpu-src
pipi() { "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@"; }
pipi "$site" $(ls .gpuwheels/*.whl | grep -v /gsplat-) || { echo "error: installing the wheels failed" >&2; exit 1; }
if compgen -G ".gpuwheels/gsplat-*.whl" >/dev/null; then
  pipi "$gsite" .gpuwheels/gsplat-*.whl && export VD_GPU_GSPLAT_SITE="$gsite"
fi
rm -rf "$src" && mkdir -p "$src"
cp -r vd "$src/vd" && cp -r commands "$src/vd/commands" && cp -r cache "$src/vd/cache"
export PYTHONPATH="$src:$site${PYTHONPATH:+:$PYTHONPATH}"
echo "installed in $(( $(date +%s) - start )) s: $(ls .gpuwheels | tr '\n' ' ')"
exec "$PY" bench/gpu/run.py --budget-s "$(( total_s - ($(date +%s) - start) ))" "$@"
