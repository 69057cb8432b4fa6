#!/usr/bin/env bash
# The one script for a machine with a GPU (DESIGN.md section 4): build Release for sm_90, run
# every test (the CUDA ones run here), run the CUDA tests under compute-sanitizer when present,
# run the benchmarks against cuBLAS, and print one table. Full logs go to $OUT (or gpu_check_out/).
# Must finish in under 8 minutes on a 16-core H100 host.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
BUILD=build-gpu
JOBS="$(nproc)"
START=$(date +%s)
export PATH="/usr/local/cuda/bin:$PATH"
status=0
summary=()
note() { summary+=("$1|$2|$3"); }
elapsed() { echo $(( $(date +%s) - START ))s; }

nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv >"$OUT/gpu.txt" 2>&1
echo "== GPU: $(tail -n1 "$OUT/gpu.txt")"

# Dependencies: GPU hosts have no package network, so tools/gpu_deps.sh downloads the Debian
# packages beforehand and the call carries .gpudeps; unpack them into a private root.
DEPS_ARG=()
if ! dpkg -s libopenblas-openmp-dev zlib1g-dev nlohmann-json3-dev libgtest-dev libstb-dev libjpeg62-turbo-dev >/dev/null 2>&1 && [[ -d .gpudeps/debs ]]; then
  mkdir -p .gpudeps/root
  for f in .gpudeps/debs/*.deb; do
    dpkg-deb -x "$f" .gpudeps/root 2>/dev/null || (cd .gpudeps/root && ar p "$OLDPWD/$f" data.tar.xz | tar xJ)
  done
  DEPS_ARG=(-DDISTILL_DEPS_PREFIX="$PWD/.gpudeps/root")
  export LD_LIBRARY_PATH="$PWD/.gpudeps/root/usr/lib/x86_64-linux-gnu/openblas-openmp:$PWD/.gpudeps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  echo "using unpacked packages in .gpudeps/root"
fi

GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
echo "== build ($JOBS jobs) $(elapsed)"
if cmake "${GEN[@]}" -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDISTILL_CUDA=ON \
     -DCMAKE_CUDA_ARCHITECTURES=90 -DDISTILL_WERROR=OFF "${DEPS_ARG[@]}" >"$OUT/build.log" 2>&1 &&
   cmake --build "$BUILD" -j "$JOBS" >>"$OUT/build.log" 2>&1; then
  note build ok "$(elapsed)"
else
  note build FAILED "see build.log"
  tail -n 40 "$OUT/build.log"
  printf '%s\n' "${summary[@]}" | column -t -s'|'
  exit 1
fi

echo "== info $(elapsed)"
"$BUILD/distill" info | tee "$OUT/info.txt"

echo "== tests $(elapsed)"
if (cd "$BUILD" && timeout 240 ctest -j "$JOBS" --output-on-failure --timeout 120) >"$OUT/tests.log" 2>&1; then
  note tests ok "$(grep -E 'tests passed' "$OUT/tests.log" | tail -n1)"
else
  status=1
  note tests FAILED "$(grep -E 'tests passed|tests failed' "$OUT/tests.log" | tail -n1)"
  grep -E '^\s*[0-9]+ - .*(Failed|Exception|Timeout)' "$OUT/tests.log" | head -n 40
fi
# The CUDA instances ran inside ctest above; summarise them from its log instead of rerunning.
cuda_pass=$(grep -cE 'Test +#[0-9]+: .*/cuda .*Passed' "$OUT/tests.log")
cuda_fail=$(grep -cE 'Test +#[0-9]+: .*/cuda .*(Failed|Exception|Timeout)' "$OUT/tests.log")
cuda_skip=$(grep -cE 'Test +#[0-9]+: .*/cuda .*Skipped' "$OUT/tests.log")
note cuda-tests "$( ((cuda_fail)) && echo FAILED || echo ok)" "$cuda_pass passed, $cuda_fail failed, $cuda_skip skipped"

if command -v compute-sanitizer >/dev/null 2>&1; then
  echo "== compute-sanitizer memcheck $(elapsed)"
  if timeout "${MEMCHECK_SECONDS:-60}" compute-sanitizer --tool memcheck --error-exitcode 9 "$BUILD/distill_tests" \
       --gtest_filter='*cuda*:*Cuda*' >"$OUT/memcheck.log" 2>&1; then
    note memcheck ok "$(grep -c 'PASSED\|OK \]' "$OUT/memcheck.log") lines ok"
  else
    note memcheck "FAILED/timeout" "$(grep -m1 -E 'ERROR SUMMARY|Invalid' "$OUT/memcheck.log")"
  fi
fi

echo "== bench gemm $(elapsed)"
timeout 60 "$BUILD/distill" bench gemm --device cuda --dtype f32,bf16 --sizes 1024,4096,8192 --iters 10 \
  | tee "$OUT/bench_gemm.txt"
timeout 30 "$BUILD/distill" bench gemm --device cpu --sizes 512,1024 | tee "$OUT/bench_gemm_cpu.txt"

echo "== bench kernels $(elapsed)"
timeout "${KERNEL_BENCH_SECONDS:-150}" "$BUILD/distill" bench kernels --device cuda --iters 5 --json >"$OUT/bench_kernels.json" 2>"$OUT/bench_kernels.err"
note bench-kernels "rc=$?" "$(tail -n1 "$OUT/bench_kernels.err")"
echo "== torch kernels $(elapsed)"
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  timeout "${TORCH_BENCH_SECONDS:-100}" python3 tools/bench/torch_kernels.py --iters 5 >"$OUT/torch_kernels.json" 2>"$OUT/torch_kernels.err"
  note torch-kernels "rc=$?" "$(python3 -c 'import torch; print(torch.__version__)')"
else
  note torch-kernels skipped "no python3 with CUDA torch"
fi

echo
echo "================ gpu_check summary ($(elapsed)) ================"
printf '%s\n' "${summary[@]}" | column -t -s'|'
echo "-- gemm (ours vs cuBLAS, same process)"
cat "$OUT/bench_gemm.txt"
echo "-- kernels (ours vs in-process peer, and PyTorch on the same card)"
python3 tools/bench/side_by_side.py "$OUT/bench_kernels.json" "$OUT/torch_kernels.json"
exit $status
