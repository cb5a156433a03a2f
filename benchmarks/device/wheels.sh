#!/usr/bin/env bash
# The wheels the lent GPU machine lacks, for its Python 3.12 on manylinux x86-64, downloaded into .whl/ (git-ignored),
# and a check that what travels there (the repository, the wheels, the MNIST files in .data/) stays under 64 MiB.
#
#     bash benchmarks/device/wheels.sh          # then: the device command in benchmarks/device/check.sh
#
# The harness's dependencies are resolved for that platform without TensorFlow (the machine trains with JAX or
# PyTorch); every package of the machine's own image (present.txt) is left out, the rest pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=benchmarks/device
limit=$((64 * 1024 * 1024))
platform=(--python-version 3.12 --implementation cp --abi cp312 --only-binary=:all:
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The project's own dependencies, less TensorFlow.
python3 - > "$scratch/requirements.txt" <<'PY'
import tomllib
for requirement in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    if not requirement.startswith("tensorflow"):
        print(requirement)
PY
python3 -m pip install --quiet --dry-run --ignore-installed --target "$scratch/target" "${platform[@]}" \
    --report "$scratch/report.json" -r "$scratch/requirements.txt" -c "$here/constraints.txt"
# Split the resolution: what the machine lacks (carried), and what it has (the rehearsal installs those from the index).
python3 - "$scratch/report.json" "$here/present.txt" "$scratch/missing.txt" "$scratch/device-has.txt" <<'PY'
import json, re, sys
normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()
present = {normal(line.strip()) for line in open(sys.argv[2]) if line.strip() and not line.startswith("#")}
missing, has = open(sys.argv[3], "w"), open(sys.argv[4], "w")
for item in json.load(open(sys.argv[1]))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    print(f"{name}=={version}", file=has if normal(name) in present else missing)
PY
rm -rf .whl && mkdir .whl
python3 -m pip download --quiet --no-deps "${platform[@]}" -d .whl -r "$scratch/missing.txt"
cp "$scratch/device-has.txt" .whl/device-has.txt
echo "$(ls .whl/*.whl | wc -l) wheels, $(du -sh .whl | cut -f1), for: $(tr '\n' ' ' < "$scratch/missing.txt")"

# MNIST travels too: the shared data folder beside the checkout does not.
if [ -d ../shared/data/mnist ] && [ ! -d .data/mnist ]; then
    mkdir -p .data && cp -r ../shared/data/mnist .data/mnist && chmod -R u+w .data
fi
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb .whl .data 2>/dev/null | tail -1 | cut -f1)
total=$((tracked + carried))
echo "travels: repository $((tracked / 1024)) KiB + wheels and data $((carried / 1024)) KiB = $((total / 1024 / 1024)) MiB of 64"
[ "$total" -lt "$limit" ] || { echo "over the 64 MiB a device call carries" >&2; exit 1; }
