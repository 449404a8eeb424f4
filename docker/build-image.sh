#!/usr/bin/env bash
# Build one image from the repository root with `docker build` (the classic builder is
# enough), on the base image `make base-image` chose, quietly: one line per image, the
# full log in build/logs/, its tail on failure.
#
#   docker/build-image.sh IMAGE TARGET [DOCKERFILE] [LOCK]
#   docker/build-image.sh lab/trio-echo:latest trio-echo
#   docker/build-image.sh lab/locust:latest locust loadtest/Dockerfile requirements/loadtest.txt
#
# DOCKERFILE defaults to docker/Dockerfile; LOCK (passed as --build-arg REQUIREMENTS)
# to the Dockerfile's own default. BASE_IMAGE comes from $BASE_IMAGE, else from
# build/base-image.ref (written by `make base-image`). Fill the wheelhouse for LOCK
# first (`make wheelhouse LOCK=...`) so the build needs no index.
set -euo pipefail

image="${1:?usage: $0 IMAGE TARGET [DOCKERFILE] [LOCK]}"
target="${2:?usage: $0 IMAGE TARGET [DOCKERFILE] [LOCK]}"
dockerfile="${3:-docker/Dockerfile}"
lock="${4:-}"
base="${BASE_IMAGE:-$(cat build/base-image.ref 2>/dev/null || true)}"
if [[ -z "$base" ]]; then
  echo "build-image: no base image: run 'make base-image' or set BASE_IMAGE" >&2
  exit 2
fi

args=(-f "$dockerfile" --target "$target" --build-arg "BASE_IMAGE=$base" -t "$image")
[[ -n "$lock" ]] && args+=(--build-arg "REQUIREMENTS=$lock")
mkdir -p build/logs
log="build/logs/image-${image//[\/:]/_}.log"
start=$SECONDS
echo "building $image (target $target; log: $log) ..."
# Whichever builder the client picks: classic here (no buildx), BuildKit elsewhere;
# the Dockerfile is written for both.
if ! docker build "${args[@]}" . >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "build-image: docker build of $image failed (full log: $log)" >&2
  exit 1
fi
size="$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
echo "built $image ($target) on $base in $((SECONDS - start)) s: $size"
