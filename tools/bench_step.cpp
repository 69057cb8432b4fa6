// `distill bench step`: one stage-2 distillation training step at full size, the engine's side of
// tools/bench/torch_step.py. Per step: the frozen teacher image encoder and the image-text head
// forward (no gradient) give the soft targets; the fresh student (the teacher's architecture plus
// a classifier) runs forward and backward on the distillation loss; AdamW updates it. Reports
// step time, images/s, peak GPU memory (the caching allocator's high-water mark of live bytes,
// like torch.cuda.max_memory_allocated) and model FLOP utilisation: counted matrix FLOPs per step
// (3x the student's forward, plus the teacher's and the head's forwards) over the bf16 matrix rate
// measured in the same process with a 8192^3 GEMM.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/allocator.h"
#include "core/autocast.h"
#include "core/autograd.h"
#include "core/flops.h"
#include "core/threads.h"
#include "kernels/profiler.h"
#include "models/encoder.h"
#include "models/head.h"
#include "tools/bench_util.h"
#include "tools/cli.h"
#include "train/losses.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace distill::cli {

namespace {

// Matrix rate of this device through the engine's matmul, in FLOP/s: bf16 (cuBLAS) on CUDA, f32
// (OpenBLAS) on the CPU.
double measured_bf16_rate(const Device& device) {
  const int64_t n = device.is_cuda() ? 8192 : 1024;
  Generator gen(7);
  const Tensor a = to_device(randn({n, n}, TensorOptions(DType::F32), &gen), device);
  const Tensor a16 = to_dtype(a, device.is_cuda() ? DType::BF16 : DType::F32);
  const double sec = median_seconds([&] { matmul(a16, a16); }, device.is_cuda(), 2, 5);
  return 2.0 * n * n * n / sec;
}

}  // namespace

int bench_step(const Args& args, const Device& device) {
  const std::string name = args.value_or("model", "clip-vit-b-16");
  const std::vector<std::string> models = {"clip-vit-b-32", "clip-vit-b-16", "clip-rn50"};
  if (std::find(models.begin(), models.end(), name) == models.end())
    throw UsageError(
        "distill bench step: --model accepts clip-vit-b-32, clip-vit-b-16, clip-rn50; got '" +
        name + "'");
  const int64_t batch = args.int_or("batch", device.is_cuda() ? 256 : 8);
  const int64_t classes = args.int_or("classes", 1000);
  const int iters = static_cast<int>(args.int_or("iters", device.is_cuda() ? 10 : 2));
  const int warmup = static_cast<int>(args.int_or("warmup", 3));
  const std::string precision = args.value_or("precision", device.is_cuda() ? "bf16" : "f32");
  if (batch < 1) throw UsageError("distill bench step: --batch must be at least 1");
  if (classes < 2) throw UsageError("distill bench step: --classes must be at least 2");
  if (iters < 1) throw UsageError("distill bench step: --iters must be at least 1");
  if (warmup < 0) throw UsageError("distill bench step: --warmup must be at least 0");
  if (precision != "f32" && precision != "bf16")
    throw UsageError("distill bench step: --precision accepts f32 or bf16, got '" + precision +
                     "'");
  const bool bf16 = precision == "bf16";
  bool models_built = false;  // an out-of-memory error says whether the models or the step failed
  try {
    Generator gen(1);
    auto teacher_module = models::make_preset(name, &gen);
    auto teacher = std::dynamic_pointer_cast<models::ImageEncoder>(teacher_module);
    teacher->requires_grad_(false);
    teacher->eval();
    teacher->to(device);
    models::HeadConfig hc;
    hc.query_dim = 512;  // CLIP text width; RoBERTa's 768 changes only the head's first projection
    hc.token_dim = teacher->token_dim();
    hc.num_classes = classes;
    models::ImageTextHead head(hc, &gen);
    head.requires_grad_(false);
    head.eval();
    head.to(device);
    auto student_encoder = models::make_image_encoder(teacher->config_json(), "student", &gen);
    models::EncoderClassifier student(student_encoder, classes, &gen);
    student.to(device);
    student.train();
    train::OptimizerConfig oc;
    oc.weight_decay = 0.05;
    train::LrSchedule schedule;
    schedule.base_lr = 1e-4;
    train::Optimizer optimizer(student, oc, schedule);
    models_built = true;

    const int64_t s = teacher->image_size();
    const TensorOptions f32(DType::F32);
    const Tensor images = to_device(randn({batch, 3, s, s}, f32, &gen), device);
    const Tensor queries = to_device(randn({classes, hc.query_dim}, f32, &gen), device);
    train::DistillationOptions dopts;  // alpha = 1, tau = 1: the thesis default

    const auto teacher_logits = [&] {
      NoGradGuard no_grad;
      return head.forward(teacher->encode(images).tokens, queries);
    };
    std::vector<double> losses;
    const auto step = [&] {
      AutocastGuard autocast(DType::BF16, bf16);
      const Tensor target = teacher_logits();
      const Tensor loss =
          train::distillation_loss(student.forward(images), target, Tensor(), dopts).total;
      optimizer.accumulate(loss);
      losses.push_back(loss.item());
    };

    // Model FLOPs of one step, counted on forwards without autograd.
    double teacher_flops = 0, student_flops = 0;
    {
      AutocastGuard autocast(DType::BF16, bf16);
      NoGradGuard no_grad;
      {
        FlopCounter c;
        teacher_logits();
        teacher_flops = c.flops();
      }
      FlopCounter c;
      student.forward(images);
      student_flops = c.flops();
    }
    const double step_flops = teacher_flops + 3 * student_flops;

    for (int i = 0; i < warmup; ++i) step();
    if (device.is_cuda()) {
      kernels::cuda::synchronize();
      cuda_reset_peak(device.index);
    }
    const double sec = median_seconds(step, device.is_cuda(), 0, iters);
    const double peak_gib =
        device.is_cuda() ? cuda_memory_stats(device.index).peak_bytes / double(1 << 30) : 0.0;
    // --profile N: N more steps under CUPTI, every kernel's time (cuBLAS's included) by name.
    nlohmann::json profile = nlohmann::json::array();
    const int profile_steps = static_cast<int>(args.int_or("profile", 0));
    double profiled_ms = 0;
    if (profile_steps > 0 && device.is_cuda()) {
      kernels::cuda::profiler_start();
      for (int i = 0; i < profile_steps; ++i) step();
      const auto kernels = kernels::cuda::profiler_stop();
      for (const auto& k : kernels) profiled_ms += k.total_ms / profile_steps;
      for (size_t i = 0; i < kernels.size() && i < 40; ++i)
        profile.push_back({{"name", kernels[i].name.substr(0, 160)},
                           {"calls_per_step", double(kernels[i].calls) / profile_steps},
                           {"ms_per_step", kernels[i].total_ms / profile_steps}});
    }
    const double rate = measured_bf16_rate(device);
    nlohmann::json row = {{"impl", "distill"},
                          {"mode", "engine"},
                          {"model", name},
                          {"batch", batch},
                          {"classes", classes},
                          {"precision", precision},
                          {"device", device.str()},
                          {"step_ms", sec * 1e3},
                          {"images_per_s", batch / sec},
                          {"peak_gib", peak_gib},
                          {"teacher_gflop_per_image", teacher_flops / batch / 1e9},
                          {"student_gflop_per_image", student_flops / batch / 1e9},
                          {"step_tflop", step_flops / 1e12},
                          {"achieved_tflops", step_flops / sec / 1e12},
                          {"bf16_matrix_tflops", device.is_cuda() ? rate / 1e12 : 0.0},
                          {"matrix_tflops", rate / 1e12},
                          {"mfu", step_flops / sec / rate},
                          {"loss_first", losses.front()},
                          {"loss_last", losses.back()},
                          {"iters", iters}};
    if (!profile.empty()) {
      row["profile"] = profile;
      row["profile_gpu_busy_ms"] = profiled_ms;  // sum of kernel/copy times: the rest is idle GPU
    }
    if (args.flag("json")) {
      std::printf("%s\n", row.dump().c_str());
    } else {
      std::printf(
          "stage-2 step %s on %s, batch %lld, %s: %.1f ms/step, %.1f images/s, peak %.2f GiB, "
          "%.2f TFLOP/s achieved (MFU %.1f%% of %.1f TFLOP/s measured %s matmul), loss %.4f -> "
          "%.4f\n",
          name.c_str(), device.str().c_str(), static_cast<long long>(batch), precision.c_str(),
          sec * 1e3, batch / sec, peak_gib, step_flops / sec / 1e12, 100 * step_flops / sec / rate,
          rate / 1e12, device.is_cuda() ? "bf16" : "f32", losses.front(), losses.back());
      if (!profile.empty()) {
        std::printf("GPU busy %.1f ms of a %.1f ms step; top kernels per step:\n", profiled_ms,
                    sec * 1e3);
        for (const auto& k : profile)
          std::printf("  %8.2f ms %6.1f%% %6.0f calls  %s\n", k["ms_per_step"].get<double>(),
                      100 * k["ms_per_step"].get<double>() / (sec * 1e3),
                      k["calls_per_step"].get<double>(),
                      k["name"].get<std::string>().substr(0, 100).c_str());
      }
    }
  } catch (const OutOfMemory& e) {
    const std::string context = "in distill bench step " + name + " (batch size " +
                                std::to_string(batch) + ", precision " + precision + ")";
    std::string advice = !models_built ? "the models alone do not fit (try a smaller --model)"
                         : bf16        ? "lower --batch"
                                       : "lower --batch or use --precision bf16";
    if (e.details().limited) advice += "; or raise DISTILL_MEMORY_LIMIT";
    throw OutOfMemory(out_of_memory_message(
                          e, context, models_built ? "the step" : "building the models", advice),
                      e.details());
  }
  return 0;
}

}  // namespace distill::cli
