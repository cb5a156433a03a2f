#!/usr/bin/env bash
# The device command rehearsed here, on the CPU: a fresh Python 3.12 venv holding only what the GPU machine holds
# that the harness needs (the packages of its image, from the index, at the versions resolved for it), plus JAX and
# pytest, and the carried wheels installed with --no-index, as there. Run benchmarks/device/wheels.sh first.
#
#     bash benchmarks/device/rehearse.sh      # -> device-results/, as the device would hand back
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f .whl/device-has.txt ] || { echo "no .whl/: run benchmarks/device/wheels.sh first" >&2; exit 1; }
python=""
for candidate in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do  # on PATH, or pyenv's
    if "$candidate" --version >/dev/null 2>&1; then python=$candidate; break; fi
done
[ -n "$python" ] || { echo "the rehearsal needs python3.12, the GPU machine's Python" >&2; exit 1; }
rm -rf .venv-rehearsal /tmp/harness-site
"$python" -m venv .venv-rehearsal
. .venv-rehearsal/bin/activate
python3 -m pip install -q --upgrade pip
python3 -m pip install -q -r .whl/device-has.txt jax pytest
# On the CPU every phase takes longer than on the GPU: fewer images and a larger budget let each one run to its end.
CHECK_TRAIN_SIZE=${CHECK_TRAIN_SIZE:-1500} CHECK_TIME_SCALE=${CHECK_TIME_SCALE:-4} CHECK_SECONDS=${CHECK_SECONDS:-2500} \
    bash benchmarks/device/check.sh
