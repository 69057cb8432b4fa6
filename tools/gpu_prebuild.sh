#!/usr/bin/env bash
# Builds the CUDA binaries for tools/gpu_check.sh on this machine (no GPU needed: nvcc compiles,
# sm_90 only, Release) and packs them into .gpubin/prebuilt.tar.xz, so that the GPU machine's
# scarce time goes to tests and benchmarks rather than to compiling. The GPU host must have the
# same CUDA major version and see this checkout at the same absolute path (the tests find their
# fixtures through it); gpu_check.sh builds from source when the packed binaries do not run.
# Pass `carry: [".gpudeps", ".gpubin", ".gpudata"]` to the device call.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-gpu
GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
# No MPI: the GPU host may lack libmpi, and the check runs one process (NCCL still runs, with a
# one-rank communicator).
cmake "${GEN[@]}" -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDISTILL_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DDISTILL_WERROR=ON -DDISTILL_MPI=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
{
  echo "built $(date -u +%FT%TZ) from $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')"
  nvcc --version | tail -n1
} >"$BUILD/prebuilt.txt"
mkdir -p .gpubin
tar -cJf .gpubin/prebuilt.tar.xz -C "$BUILD" distill distill_tests CTestTestfile.cmake \
  'distill_tests[1]_include.cmake' 'distill_tests[1]_tests.cmake' prebuilt.txt
ls -la .gpubin
