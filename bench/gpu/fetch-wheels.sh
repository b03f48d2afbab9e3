#!/usr/bin/env bash
# Download the wheels of bench/gpu/wheels.txt for the GPU machine (python 3.12, manylinux x86-64)
# into .gpuwheels/ at the repository root (git-ignored). Run it here, where PyPI is reachable, then
# carry the folder: device run with carry [".gpuwheels"] and command "bash bench/gpu/run.sh".
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.gpuwheels
mkdir -p "$dest"
grep -vE '^[[:space:]]*(#|$)' bench/gpu/wheels.txt | while read -r req; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$dest" "$req"
done
du -sh "$dest"
ls "$dest"
