#!/usr/bin/env bash
# Fill a wheelhouse on the host with every package a lock file pins, as wheels for the
# containers' Python (CPython 3.11, glibc Linux, the engine's CPU architecture), so an
# image build can `pip install --no-index --find-links` without reaching any index.
#
#   docker/wheelhouse.sh LOCK [DIR]      # e.g. requirements/runtime.txt build/wheels
#
# The lock must pin everything (pip-compile output): packages are fetched --no-deps.
# Binary wheels come from the index for the target tags (not the host's); a package
# published only as an sdist is built into a wheel here, which must come out pure
# Python (py3-none-any), otherwise we stop and say which. Several locks may share one
# DIR: pins select versions at install time. Re-running only fetches what is missing.
# Env: PYTHON (a Python with pip >= 22, default .venv/bin/python), WHEEL_ARCH
# (default: the Docker engine's architecture), PYTHON_VERSION (default 3.11).
set -euo pipefail

lock="${1:?usage: $0 LOCK [DIR]}"
dir="${2:-build/wheels}"
python="${PYTHON:-.venv/bin/python}"
pyver="${PYTHON_VERSION:-3.11}"
arch="${WHEEL_ARCH:-$(docker info -f '{{.Architecture}}' 2>/dev/null || uname -m)}"
case "$arch" in amd64) arch=x86_64 ;; arm64) arch=aarch64 ;; esac

# Debian bookworm and the official slim images ship glibc 2.36, so any manylinux wheel
# from 2_17 (the oldest still published) up to 2_36 runs there; pip does not expand a
# manylinux_2_X tag downwards by itself, so list them all (newest preferred).
platforms=()
for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_${arch}"); done
platforms+=(--platform "manylinux2014_${arch}")   # pip adds manylinux2010 and manylinux1

mkdir -p "$dir"
start=$SECONDS
echo "wheelhouse: $lock -> $dir (cp${pyver/./} ${arch})" >&2
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --prefer-binary \
  --dest "$dir" --implementation cp --python-version "$pyver" --abi "cp${pyver/./}" \
  --abi abi3 --abi none "${platforms[@]}" -r "$lock"

shopt -s nullglob
for sdist in "$dir"/*.tar.gz "$dir"/*.zip; do
  echo "wheelhouse: building a wheel from $(basename "$sdist") (no wheel published)" >&2
  "$python" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$dir" "$sdist"
  rm -f "$sdist"
done
for whl in "$dir"/*.whl; do
  case "$(basename "$whl")" in
    *-none-any.whl | *-cp${pyver/./}-*linux*_"${arch}".whl | *-abi3-*linux*_"${arch}".whl) ;;
    *)
      echo "wheelhouse: $(basename "$whl") does not fit cp${pyver/./} linux ${arch}; delete it and pin a version with such a wheel" >&2
      exit 1
      ;;
  esac
done
wheels=("$dir"/*.whl)
echo "wheelhouse: ${#wheels[@]} wheels, $(du -sh "$dir" | cut -f1), $((SECONDS - start)) s" >&2
