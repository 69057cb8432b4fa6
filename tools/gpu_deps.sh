#!/usr/bin/env bash
# Downloads the Debian packages the build needs into .gpudeps/debs, so that tools/gpu_check.sh can
# build on a GPU host that has no package network (pass `carry: [".gpudeps"]` to the device call).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpudeps/debs
cd .gpudeps/debs
apt-get download libopenblas0-openmp libopenblas-openmp-dev libopenblas0 libopenblas-dev libgomp1 \
  libgfortran5 nlohmann-json3-dev libgtest-dev libstb-dev libstb0 zlib1g-dev \
  libjpeg62-turbo-dev libjpeg62-turbo zlib1g
ls -la
