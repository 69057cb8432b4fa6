// `distill bench gemm`: our matmul against a direct call of the library it wraps, in the same
// process on the same buffers — cblas_sgemm on the CPU, cublasGemmEx on a GPU — as a ratio.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/ops.h"
#include "kernels/device.h"
#include "tools/bench_kernels.h"
#include "tools/bench_util.h"
#include "tools/cli.h"

#if DISTILL_HAS_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

namespace distill::cli {

namespace {

std::vector<int64_t> parse_sizes(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    try {
      size_t pos = 0;
      const long long v = std::stoll(tok, &pos);
      if (pos != tok.size() || v <= 0) throw std::invalid_argument("bad");
      out.push_back(v);
    } catch (const std::exception&) {
      throw UsageError(
          "distill bench gemm: --sizes expects positive integers separated by commas, got '" + s +
          "'");
    }
  }
  if (out.empty()) throw UsageError("distill bench gemm: --sizes is empty");
  return out;
}

#if DISTILL_HAS_CUDA
#endif

// Reference: C = A @ B for row-major A [n, n], B [n, n] called directly on the library.
void reference_gemm(const Tensor& a, const Tensor& b, Tensor& c) {
  const int n = static_cast<int>(a.size(0));
  if (a.device().is_cpu()) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data<float>(), n,
                b.data<float>(), n, 0.0f, c.data<float>(), n);
    return;
  }
#if DISTILL_HAS_CUDA
  // Row-major C = A B is column-major C^T = B^T A^T.
  const float alpha = 1.0f, beta = 0.0f;
  const bool bf16 = a.dtype() == DType::BF16;
  const cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasStatus_t st = cublasGemmEx(
      cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, b.data_ptr(), t, n, a.data_ptr(),
      t, n, &beta, c.data_ptr(), t, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasGemmEx failed");
#endif
}

Device bench_device(const Args& args, const char* what) {
  const std::string dev_name = args.value_or("device", cuda_available() ? "cuda" : "cpu");
  if (dev_name == "cpu") return Device::cpu();
  if (dev_name != "cuda")
    throw UsageError(std::string("distill bench ") + what +
                     ": --device must be cpu or cuda, got '" + dev_name + "'");
  if (!cuda_available())
    throw UsageError(std::string("distill bench ") + what + ": --device cuda requested but " +
                     (cuda_compiled() ? "no GPU was found" : "CUDA is not compiled in"));
  return Device::cuda(0);
}

int bench_gemm(const Args& args) {
  const Device device = bench_device(args, "gemm");
  const std::string dtype_s = args.value_or("dtype", device.is_cpu() ? "f32" : "f32,bf16");
  std::vector<DType> dtypes;
  {
    std::stringstream ss(dtype_s);
    std::string tok;
    while (std::getline(ss, tok, ',')) {
      if (tok != "f32" && tok != "bf16")
        throw UsageError("distill bench gemm: --dtype accepts f32 and bf16, got '" + tok + "'");
      if (tok == "bf16" && device.is_cpu())
        throw UsageError(
            "distill bench gemm: bf16 is only benchmarked on CUDA (OpenBLAS has no bf16 GEMM "
            "peer)");
      dtypes.push_back(dtype_from_name(tok));
    }
  }
  const auto sizes = parse_sizes(
      args.value_or("sizes", device.is_cpu() ? "128,256,512,1024" : "1024,2048,4096,8192"));
  const int iters = static_cast<int>(args.int_or("iters", device.is_cpu() ? 5 : 20));
  if (iters < 1) throw UsageError("distill bench gemm: --iters must be at least 1");

  nlohmann::json rows = nlohmann::json::array();
  const char* peer = device.is_cpu() ? "cblas_sgemm" : "cublasGemmEx";
  if (!args.flag("json")) {
    std::printf(
        "gemm on %s: distill matmul vs %s (same process, same inputs; ratio = ours / peer)\n",
        device.str().c_str(), peer);
    std::printf("%-6s %-8s %12s %12s %8s %10s\n", "dtype", "n", "ours TF/s", "peer TF/s", "ratio",
                "max rel");
  }
  NoGradGuard no_grad;
  for (DType dt : dtypes) {
    for (int64_t n : sizes) {
      Generator g(1234 + n);
      Tensor a = uniform({n, n}, -1, 1, TensorOptions(DType::F32, device), &g).to(dt);
      Tensor b = uniform({n, n}, -1, 1, TensorOptions(DType::F32, device), &g).to(dt);
      Tensor c_ref = Tensor::empty({n, n}, TensorOptions(dt, device));
      Tensor c_ours;
      const double flops = 2.0 * n * n * n;
      const double t_ours =
          median_seconds([&] { c_ours = matmul(a, b); }, device.is_cuda(), 2, iters);
      const double t_ref =
          median_seconds([&] { reference_gemm(a, b, c_ref); }, device.is_cuda(), 2, iters);
      const double diff = max_rel_diff(c_ours, c_ref);
      const double tf_ours = flops / t_ours / 1e12, tf_ref = flops / t_ref / 1e12;
      rows.push_back({{"dtype", dtype_name(dt)},
                      {"n", n},
                      {"ours_tflops", tf_ours},
                      {"peer_tflops", tf_ref},
                      {"ratio", tf_ours / tf_ref},
                      {"peer", peer},
                      {"max_rel_diff", diff},
                      {"ours_ms", t_ours * 1e3},
                      {"peer_ms", t_ref * 1e3}});
      if (!args.flag("json"))
        std::printf("%-6s %-8lld %12.3f %12.3f %8.3f %10.2e\n", dtype_name(dt),
                    static_cast<long long>(n), tf_ours, tf_ref, tf_ours / tf_ref, diff);
    }
  }
  if (args.flag("json")) {
    nlohmann::json j = {{"bench", "gemm"}, {"device", device.str()}, {"rows", rows}};
    std::printf("%s\n", j.dump(2).c_str());
  }
  return 0;
}

// `distill bench kernels`: every hand-written kernel family against its reference.
int bench_kernels(const Args& args) {
  const Device device = bench_device(args, "kernels");
  const int iters = static_cast<int>(args.int_or("iters", device.is_cpu() ? 3 : 20));
  if (iters < 1) throw UsageError("distill bench kernels: --iters must be at least 1");
  const std::string only = args.value_or("only", "attention,conv,loss,optim");
  struct Family {
    const char* name;
    nlohmann::json (*run)(const Device&, int);
  };
  const Family families[] = {{"attention", bench_attention},
                             {"conv", bench_conv},
                             {"loss", bench_loss},
                             {"optim", bench_optim}};
  std::vector<std::string> wanted;
  {
    std::stringstream ss(only);
    std::string tok;
    while (std::getline(ss, tok, ',')) {
      bool known = false;
      for (const auto& f : families) known = known || tok == f.name;
      if (!known)
        throw UsageError(
            "distill bench kernels: --only accepts attention, conv, loss, optim; got '" + tok +
            "'");
      wanted.push_back(tok);
    }
  }
  nlohmann::json rows = nlohmann::json::array();
  const bool json = args.flag("json");
  if (!json) {
    std::printf(
        "kernels on %s: ours vs the reference in the same process (ratio = peer time / our time, > "
        "1: ours is faster)\n",
        device.str().c_str());
    std::printf("%-22s %-20s %-5s %10s %-24s %10s %7s %10s\n", "kernel", "shape", "dtype",
                "ours ms", "peer", "peer ms", "ratio", "TF/s|GB/s");
  }
  for (const auto& f : families) {
    if (std::find(wanted.begin(), wanted.end(), f.name) == wanted.end()) continue;
    nlohmann::json fam_rows;
    try {
      fam_rows = f.run(device, iters);
    } catch (const std::exception& e) {
      fam_rows = nlohmann::json::array({{{"kernel", f.name}, {"error", e.what()}}});
    }
    for (auto& r : fam_rows) {
      rows.push_back(r);
      if (json) continue;
      if (r.contains("error")) {
        std::printf("%-22s ERROR: %s\n", r.value("kernel", "?").c_str(),
                    r["error"].get<std::string>().c_str());
        continue;
      }
      const double rate = r.contains("tflops") ? r["tflops"].get<double>() : r.value("gbps", 0.0);
      std::printf("%-22s %-20s %-5s %10.3f %-24s %10.3f %7.3f %10.2f%s\n",
                  r.value("kernel", "").c_str(), r.value("shape", "").c_str(),
                  r.value("dtype", "").c_str(), r.value("ours_ms", 0.0),
                  r.value("peer", "").c_str(), r.value("peer_ms", 0.0), r.value("ratio", 0.0), rate,
                  r.contains("tflops") ? " TF/s" : " GB/s");
    }
    std::fflush(stdout);
  }
  if (json) {
    nlohmann::json j = {{"bench", "kernels"}, {"device", device.str()}, {"rows", rows}};
    std::printf("%s\n", j.dump(2).c_str());
  }
  return 0;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  // `bench data` has options of its own (tools/bench_data.cpp).
  if (argc > 2 && std::string(argv[2]) == "data") return bench_data(argc, argv);
  if (argc > 2 && std::string(argv[2]) == "allreduce") return bench_allreduce(argc, argv);
  Args args(
      "bench",
      {{"device", true, "cpu or cuda", "cuda when a GPU is present, else cpu"},
       {"dtype", true, "comma-separated dtypes (f32, bf16 on CUDA)", "f32 (CPU), f32,bf16 (CUDA)"},
       {"sizes", true, "comma-separated square sizes n (n x n x n GEMMs)", ""},
       {"iters", true, "timed iterations per case (median reported)", "5 CPU / 20 CUDA"},
       {"only", true,
        "kernels: comma-separated families (attention, conv, loss, optim); models: "
        "comma-separated presets",
        "all"},
       {"batch", true, "models, step: batch size", "32 (models), 256 (step on CUDA)"},
       {"model", true, "step: clip-vit-b-32, clip-vit-b-16 or clip-rn50", "clip-vit-b-16"},
       {"precision", true, "step: f32 or bf16 (autocast)", "bf16 on CUDA"},
       {"classes", true, "step: classes (head queries and student outputs)", "1000"},
       {"warmup", true, "step: untimed steps first", "3"},
       {"profile", true, "step: N more steps under CUPTI, time per kernel (CUDA)", "0"},
       {"json", false, "print machine-readable JSON", ""},
       {"help", false, "show this help", ""}});
  args.parse(argc, argv, 2);
  const std::string summary =
      "Benchmarks, each against a reference measured in the same process. Targets:\n"
      "  gemm     distill matmul vs a direct cblas_sgemm (CPU) or cublasGemmEx (CUDA) call\n"
      "  kernels  attention, convolution, softmax-cross-entropy and AdamW vs cuBLAS/cuDNN/copy\n"
      "           bandwidth (CUDA) or naive / im2col+OpenBLAS references (CPU)\n"
      "  models   forward images/s and texts/s of the preset towers (PyTorch beside it:\n"
      "           tools/bench/models_side_by_side.sh)\n"
      "  step     one stage-2 distillation training step (teacher + head forward, student\n"
      "           forward/backward, AdamW): ms, images/s, peak memory, MFU (PyTorch beside it:\n"
      "           tools/bench/torch_step.py)\n"
      "  data     data loader images/s on tar shards with training augmentation\n"
      "           (see 'distill bench data --help')\n"
      "  allreduce  all-reduce bandwidth by message size (MPI on the CPU, NCCL on GPUs; run\n"
      "           under mpirun; see 'distill bench allreduce --help')\n\n"
      "usage: distill bench gemm|kernels|models|step|data|allreduce [options]";
  if (args.flag("help") || args.positional().empty()) {
    std::fputs(args.help(summary).c_str(), args.flag("help") ? stdout : stderr);
    return args.flag("help") ? 0 : 2;
  }
  const std::string target = args.positional()[0];
  if (args.positional().size() > 1)
    throw UsageError("distill bench: unexpected argument '" + args.positional()[1] + "'");
  if (target == "gemm") return bench_gemm(args);
  if (target == "kernels") return bench_kernels(args);
  if (target == "models") return bench_models(args, bench_device(args, "models"));
  if (target == "step") return bench_step(args, bench_device(args, "step"));
  throw UsageError("distill bench: unknown benchmark '" + target +
                   "' (available: gemm, kernels, models, step, data, allreduce)");
}

}  // namespace distill::cli
