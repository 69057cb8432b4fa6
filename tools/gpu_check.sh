#!/usr/bin/env bash
# The one script for a machine with a GPU (DESIGN.md section 4): build Release for sm_90, run
# every test (the CUDA ones run here), run the CUDA tests under compute-sanitizer when present,
# run the benchmarks against cuBLAS/cuDNN and PyTorch, and print one table. Logs go to $OUT
# (or gpu_check_out/), at most 8 files since that is what a device call brings back.
#
# Device time is scarce, so every stage runs under a share of one deadline (GPU_CHECK_SECONDS,
# default 420) and a stage that runs out is cut, reported, and the script goes on.
# STAGES (default: all of "tests step train nccl sanitizer gemm kernels compile") picks the stages run
# after the build; they run in that order, the most needed first.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
BUILD=build-gpu
JOBS="$(nproc)"
START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-420}))
STAGES=" ${STAGES:-tests step train nccl sanitizer gemm kernels compile} "
export PATH="/usr/local/cuda/bin:$PATH"
status=0
summary=()
note() { summary+=("$1|$2|$3"); echo "-- $1: $2 $3" >>"$OUT/env.txt"; }
elapsed() { echo $(($(date +%s) - START))s; }
# budget WANTED: seconds a stage may take, at most what is left before the deadline (min 5).
budget() {
  local left=$((DEADLINE - $(date +%s)))
  ((left < 5)) && left=5
  ((left < $1)) && echo "$left" || echo "$1"
}
want() { [[ "$STAGES" == *" $1 "* ]]; }
ENV_TXT="$OUT/env.txt"

{
  echo "== $(date -u)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap,clocks.max.sm --format=csv
  nvcc --version | tail -n2
  cmake --version | head -n1
  c++ --version | head -n1
  grep PRETTY_NAME /etc/os-release
  python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda, torch.backends.cudnn.version())'
} >"$ENV_TXT" 2>&1
echo "== GPU: $(sed -n 3p "$ENV_TXT")"

# Dependencies: GPU hosts have no package network, so tools/gpu_deps.sh downloads the Debian
# packages beforehand and the call carries .gpudeps; unpack them into a private root.
DEPS_ARG=()
if ! dpkg -s libopenblas-openmp-dev zlib1g-dev nlohmann-json3-dev libgtest-dev libstb-dev libjpeg62-turbo-dev >/dev/null 2>&1 && [[ -d .gpudeps/debs ]]; then
  ROOT="$PWD/.gpudeps/root"
  mkdir -p "$ROOT"
  for f in .gpudeps/debs/*.deb; do
    dpkg-deb -x "$f" "$ROOT" 2>/dev/null || (cd "$ROOT" && ar p "$OLDPWD/$f" data.tar.xz | tar xJ)
  done
  # Absolute links (libz.so -> /lib/...) must point into the private root, not the host.
  while IFS= read -r link; do
    target="$(readlink "$link")"
    [[ -e "$ROOT$target" ]] && ln -sfn "$ROOT$target" "$link"
  done < <(find "$ROOT" -type l -lname '/*')
  DEPS_ARG=(-DDISTILL_DEPS_PREFIX="$ROOT")
  export LD_LIBRARY_PATH="$ROOT/usr/lib/x86_64-linux-gnu/openblas-openmp:$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  echo "using unpacked packages in .gpudeps/root" >>"$ENV_TXT"
fi
# cuDNN: the toolkit's, else the wheel PyTorch loads (it ships only libcudnn.so.9).
if ! ls /usr/include/cudnn.h /usr/local/cuda/include/cudnn.h >/dev/null 2>&1; then
  CUDNN_ROOT="$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null)"
  if [[ -n "$CUDNN_ROOT" ]]; then
    DEPS_ARG+=(-DCUDNN_ROOT="$CUDNN_ROOT")
    export LD_LIBRARY_PATH="$CUDNN_ROOT/lib:${LD_LIBRARY_PATH:-}"
    echo "cuDNN from $CUDNN_ROOT" >>"$ENV_TXT"
  fi
fi

# Real data: ../shared does not travel with a device call; .gpudata carries the tokenizers and
# the caption sample (tools/gpu_data.sh), so the tests that read them run here too.
if [[ ! -e ../shared/data && -d .gpudata/tokenizers ]]; then
  mkdir -p ../shared/data
  ln -s "$PWD/.gpudata/tokenizers" "$PWD/.gpudata/captions-sample" ../shared/data/
fi

# A build made beforehand on a machine without a GPU (tools/gpu_prebuild.sh: same CUDA toolkit,
# sm_90, same source path) saves the build's minutes of device time; without one, or when it
# does not run here, build from source.
prebuilt=0
if [[ -f .gpubin/prebuilt.tar.xz ]]; then
  # The packing machine's runpath may name other CUDA folders than this one's.
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
  mkdir -p "$BUILD" && tar -xJf .gpubin/prebuilt.tar.xz -C "$BUILD" &&
    "$BUILD/distill" info >/dev/null 2>&1 && "$BUILD/distill_tests" --gtest_list_tests >/dev/null 2>&1 &&
    prebuilt=1
  ((prebuilt)) && note build prebuilt "$(cat "$BUILD/prebuilt.txt" 2>/dev/null)" ||
    { echo "prebuilt binaries do not run here:"; "$BUILD/distill" info 2>&1 | tail -n3; rm -rf "$BUILD"; }
fi
# CUPTI for `distill bench step --profile` (dlopen'ed): the toolkit's, else the one PyTorch ships.
if ! ls /usr/local/cuda/extras/CUPTI/lib64/libcupti.so.13 /usr/local/cuda/lib64/libcupti.so.13 >/dev/null 2>&1; then
  cupti="$(find /usr/local/cuda*/ /opt/torch -name 'libcupti.so.13*' 2>/dev/null | head -n1)"
  [[ -n "$cupti" ]] && export LD_LIBRARY_PATH="$(dirname "$cupti"):${LD_LIBRARY_PATH:-}" &&
    echo "CUPTI from $cupti" >>"$ENV_TXT"
fi
GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
if ((prebuilt)); then
  :
elif echo "== build ($JOBS jobs) $(elapsed)" && cmake "${GEN[@]}" -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDISTILL_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DDISTILL_WERROR=OFF -DDISTILL_MPI=OFF "${DEPS_ARG[@]}" >"$OUT/build.log" 2>&1 &&
  timeout "$(budget 240)" cmake --build "$BUILD" -j "$JOBS" >>"$OUT/build.log" 2>&1; then
  note build ok "$(elapsed)"
else
  note build FAILED "see build.log"
  grep -E -m 30 'error|Error' "$OUT/build.log"
  tail -n 40 "$OUT/build.log"
  cat "$ENV_TXT"
  exit 1
fi
"$BUILD/distill" info >>"$ENV_TXT" 2>&1

# Tests: every test, CUDA instances included; OpenMP kept to 2 threads a process since ctest
# runs one process per core.
if want tests; then
  echo "== tests $(elapsed)"
  if (cd "$BUILD" && OMP_NUM_THREADS=2 timeout "$(budget 200)" ctest -j "$JOBS" --output-on-failure --timeout 120) >"$OUT/tests.log" 2>&1; then
    note tests ok "$(grep -E 'tests passed' "$OUT/tests.log" | tail -n1)"
  else
    status=1
    note tests FAILED "$(grep -E 'tests passed|tests failed' "$OUT/tests.log" | tail -n1)"
    grep -E '^\s*[0-9]+ - .*(Failed|Exception|Timeout|SEGFAULT|Child aborted)' "$OUT/tests.log" | head -n 60
  fi
  cuda_pass=$(grep -cE 'Test +#[0-9]+: .*[Cc]uda.* Passed' "$OUT/tests.log")
  cuda_fail=$(grep -cE 'Test +#[0-9]+: .*[Cc]uda.*(Failed|Exception|Timeout|SEGFAULT)' "$OUT/tests.log")
  cuda_skip=$(grep -cE 'Test +#[0-9]+: .*[Cc]uda.*Skipped' "$OUT/tests.log")
  note cuda-tests "$( ((cuda_fail)) && echo FAILED || echo ok)" "$cuda_pass passed, $cuda_fail failed, $cuda_skip skipped"
fi

if want step; then
  echo "== bench step $(elapsed)"
  for model in ${STEP_MODELS:-clip-vit-b-32 clip-vit-b-16 clip-rn50}; do
    timeout "$(budget 45)" "$BUILD/distill" bench step --model "$model" --batch "${STEP_BATCH:-256}" \
      --precision bf16 --iters 10 --profile "${PROFILE_STEPS:-2}" --json >>"$OUT/bench_step.jsonl" 2>>"$OUT/bench.txt"
    note "step $model" "rc=$?" ""
  done
  if python3 -c "import timm" 2>/dev/null; then
    # Eager for every model, then torch.compile for as many as TORCH_STEP_SECONDS allows (a
    # compile takes a minute or more); no (model, mode) starts in the last 40 s.
    torch_budget="$(budget "${TORCH_STEP_SECONDS:-150}")"
    PYTHONUNBUFFERED=1 timeout "$torch_budget" python3 tools/bench/torch_step.py --batch "${STEP_BATCH:-256}" \
      --models "${STEP_MODELS:-clip-vit-b-32 clip-vit-b-16 clip-rn50}" --modes "${TORCH_MODES:-eager compile}" \
      --iters 10 --profile "${PROFILE_STEPS:-2}" --deadline $((torch_budget - 40)) \
      >>"$OUT/bench_step.jsonl" 2>>"$OUT/bench.txt"
    note torch-step "rc=$?" "timm $(python3 -c 'import timm; print(timm.__version__)')"
  else
    note torch-step skipped "no timm"
  fi
fi

# A short real run: stage 0, the head and stage 2 on CIFAR-10 shards carried in .gpudata.
if want train && [[ -d .gpudata/cifar10-small ]]; then
  echo "== train $(elapsed)"
  timeout "$(budget 100)" "$BUILD/distill" run --config configs/gpu-cifar10-student.json \
    --runs-dir "$BUILD/runs" >"$OUT/train.log" 2>&1
  note train "rc=$?" "$(grep -E 'top-1' "$OUT/train.log" | tr -s ' ' | paste -sd';')"
fi

# Data parallelism at world size 1 on the GPU: the gradient buckets and all-reduce through NCCL
# for real (a one-rank communicator), then NCCL's all-reduce bandwidth by size.
if want nccl; then
  echo "== nccl $(elapsed)"
  timeout "$(budget 30)" "$BUILD/distill_tests" --gtest_brief=1 \
    --gtest_filter='GradientBuckets.*:Distributed.OneProcess*' >"$OUT/nccl.txt" 2>&1
  note nccl-tests "rc=$?" "$(grep -cE '^\[  (PASSED|SKIPPED)' "$OUT/nccl.txt") summary lines"
  timeout "$(budget 30)" "$BUILD/distill" bench allreduce --device cuda --max-bytes 256M \
    --iters 10 >>"$OUT/nccl.txt" 2>&1
  note bench-allreduce "rc=$?" "$(tail -n1 "$OUT/nccl.txt" | tr -s ' ')"
fi

if want sanitizer && command -v compute-sanitizer >/dev/null 2>&1; then
  echo "== compute-sanitizer $(elapsed)"
  SAN="$OUT/sanitizer.log"
  filter="${SANITIZER_FILTER:-Backends/*/cuda:Cuda/*}"
  for tool in memcheck racecheck; do
    echo "==== $tool" >>"$SAN"
    # racecheck only where kernels share memory between threads (it is slow).
    [[ $tool == racecheck ]] && filter="${RACECHECK_FILTER:-Backends/Attention*/cuda:Backends/CrossEntropy*/cuda:Backends/BatchNorm*/cuda:Cuda/CudaKernels.Softmax*:Cuda/CudaKernels.LayerNorm*:Cuda/CudaKernels.Reduce*}"
    timeout "$(budget "${SANITIZER_SECONDS:-40}")" compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "$BUILD/distill_tests" --gtest_filter="$filter" --gtest_brief=1 >>"$SAN" 2>&1
    rc=$?
    note "$tool" "$( ((rc == 0)) && echo ok || ( ((rc == 124)) && echo timeout || echo "FAILED rc=$rc"))" \
      "$(grep -E 'ERROR SUMMARY' "$SAN" | tail -n1)"
  done
fi

if want gemm; then
  echo "== bench gemm $(elapsed)"
  timeout "$(budget 30)" "$BUILD/distill" bench gemm --device cuda --dtype f32,bf16 --sizes 1024,4096,8192 --iters 10 >"$OUT/bench.txt" 2>&1
  note bench-gemm "rc=$?" ""
fi

if want kernels; then
  echo "== bench kernels $(elapsed)"
  timeout "$(budget 90)" "$BUILD/distill" bench kernels --device cuda --iters 5 --json >"$OUT/bench_kernels.json" 2>>"$OUT/bench.txt"
  note bench-kernels "rc=$?" ""
  echo "== torch kernels $(elapsed)"
  if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    PYTHONUNBUFFERED=1 timeout "$(budget 60)" python3 tools/bench/torch_kernels.py --iters 5 >"$OUT/torch_kernels.json" 2>>"$OUT/bench.txt"
    note torch-kernels "rc=$?" "$(python3 -c 'import torch; print(torch.__version__)')"
  else
    note torch-kernels skipped "no python3 with CUDA torch"
  fi
fi

# torch.compile is slow to warm up: it runs last, with whatever time is left.
if want compile && python3 -c "import timm" 2>/dev/null; then
  echo "== torch.compile step $(elapsed)"
  left=$((DEADLINE - $(date +%s) - 5))
  if ((left > 30)); then
    PYTHONUNBUFFERED=1 timeout "$left" python3 tools/bench/torch_step.py --batch "${STEP_BATCH:-256}" \
      --models "${STEP_MODELS:-clip-vit-b-32 clip-vit-b-16 clip-rn50}" --modes compile --iters 10 \
      --deadline $((left - 60)) >>"$OUT/bench_step.jsonl" 2>>"$OUT/bench.txt"
    note torch-step-compile "rc=$?" ""
  else
    note torch-step-compile skipped "no time left"
  fi
fi

echo
echo "================ gpu_check summary ($(elapsed)) ================"
printf '%s\n' "${summary[@]}" | column -t -s'|'
if [[ -f "$OUT/bench.txt" ]]; then
  echo "-- gemm (ours vs cuBLAS, same process)"
  head -n 30 "$OUT/bench.txt"
fi
if [[ -s "$OUT/bench_kernels.json" ]]; then
  echo "-- kernels (ours vs in-process peer, and PyTorch on the same card)"
  python3 tools/bench/side_by_side.py "$OUT/bench_kernels.json" "$OUT/torch_kernels.json"
fi
if [[ -s "$OUT/bench_step.jsonl" ]]; then
  echo "-- training step"
  python3 tools/bench/step_table.py "$OUT/bench_step.jsonl" 2>/dev/null || cat "$OUT/bench_step.jsonl"
fi
exit $status
