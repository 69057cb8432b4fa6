// `distill bench allreduce`: the gradient all-reduce's bandwidth by message size, as nccl-tests
// report it: algbw = bytes / time and busbw = algbw * 2 (n - 1) / n (what each link carries in a
// ring, comparable across world sizes). Run it under mpirun (CPU tensors: MPI_Allreduce) or on
// GPUs (NCCL). With one process on the CPU there is nothing to reduce: it times a copy of the
// buffer instead, the floor any reduction pays. Time per call = the slowest rank's, median over
// the timed calls.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/distributed.h"
#include "core/ops.h"
#include "tools/bench_util.h"
#include "tools/cli.h"

namespace distill::cli {

namespace {

int64_t parse_bytes(const std::string& text) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(text, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  std::string unit = text.substr(pos);
  for (auto& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  if (unit == "K" || unit == "KB" || unit == "KIB") scale = 1024.0;
  if (unit == "M" || unit == "MB" || unit == "MIB") scale = 1024.0 * 1024;
  if (unit == "G" || unit == "GB" || unit == "GIB") scale = 1024.0 * 1024 * 1024;
  if (pos == 0 || scale == 0 || v <= 0)
    throw UsageError("distill bench allreduce: expected a size like 4096, 64K, 256MB; got '" +
                     text + "'");
  return static_cast<int64_t>(v * scale);
}

}  // namespace

int bench_allreduce(int argc, char** argv) {
  Args args("bench allreduce",
            {{"device", true, "cpu (MPI) or cuda (NCCL)", "cuda when a GPU is present, else cpu"},
             {"min-bytes", true, "smallest message", "4K"},
             {"max-bytes", true, "largest message (sizes grow 4x from min-bytes)", "256M"},
             {"iters", true, "timed calls per size (median of the slowest rank's time)", "20"},
             {"warmup", true, "untimed calls per size first", "3"},
             {"json", false, "print machine-readable JSON", ""},
             {"help", false, "show this help", ""}});
  args.parse(argc, argv, 3);
  if (args.flag("help")) {
    std::fputs(args.help("All-reduce (sum, f32) bandwidth by message size: MPI on the CPU, NCCL "
                         "on GPUs. Launch with mpirun -np N (or srun); one process times a copy "
                         "(CPU) or NCCL's one-rank path (CUDA).\n\nusage: distill bench "
                         "allreduce [options]")
                   .c_str(),
               stdout);
    return 0;
  }
  if (!args.positional().empty())
    throw UsageError("distill bench allreduce: unexpected argument '" + args.positional()[0] + "'");
  const std::string dev = args.value_or("device", cuda_available() ? "cuda" : "cpu");
  if (dev != "cpu" && dev != "cuda")
    throw UsageError("distill bench allreduce: --device must be cpu or cuda, got '" + dev + "'");
  if (dev == "cuda" && !cuda_available())
    throw UsageError("distill bench allreduce: --device cuda but no GPU is available");
  if (dev == "cuda" && !dist::nccl_compiled())
    throw UsageError("distill bench allreduce: --device cuda needs NCCL, not compiled in");
  const Device device =
      dev == "cuda" ? Device::cuda(dist::local_rank() % std::max(1, kernels::cuda::device_count()))
                    : Device::cpu();
  const bool cuda = device.is_cuda();
  const int64_t min_bytes = parse_bytes(args.value_or("min-bytes", "4K"));
  const int64_t max_bytes = parse_bytes(args.value_or("max-bytes", "256M"));
  const int iters = static_cast<int>(args.int_or("iters", 20));
  const int warmup = static_cast<int>(args.int_or("warmup", 3));
  if (iters < 1 || warmup < 0)
    throw UsageError("distill bench allreduce: --iters must be >= 1 and --warmup >= 0");
  const int world = dist::world_size();
  const bool copy_only = world == 1 && !cuda;
  const double bus_factor = world > 1 ? 2.0 * (world - 1) / world : 0.0;

  nlohmann::json rows = nlohmann::json::array();
  if (dist::is_primary() && !args.flag("json")) {
    std::printf("all-reduce (sum, f32) on %s, %d rank(s)%s\n", device.str().c_str(), world,
                copy_only ? ": one process, timing a copy of the buffer (no reduction)" : "");
    std::printf("%12s %12s %14s %14s\n", "bytes", "time (us)", "algbw (GB/s)", "busbw (GB/s)");
  }
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    const int64_t n = std::max<int64_t>(1, bytes / 4);
    Tensor buffer = randn({n}, TensorOptions(DType::F32, device));
    Tensor copy_target = copy_only ? Tensor::empty({n}) : Tensor();
    std::vector<double> times;
    for (int i = -warmup; i < iters; ++i) {
      dist::barrier();
      const auto t0 = std::chrono::steady_clock::now();
      if (copy_only) {
        copy_target.copy_(buffer);
      } else {
        dist::all_reduce_sum(buffer);
      }
      if (cuda) kernels::cuda::synchronize();
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (i < 0) continue;
      double slowest = t;
      for (float r : dist::all_gather(std::vector<float>{static_cast<float>(t)}))
        slowest = std::max(slowest, static_cast<double>(r));
      times.push_back(slowest);
      // Sums grow by the world size per call: keep the values bounded.
      if (!copy_only && world > 1 && i % 8 == 7)
        buffer = randn({n}, TensorOptions(DType::F32, device));
    }
    std::sort(times.begin(), times.end());
    const double t = times[times.size() / 2];
    const double algbw = static_cast<double>(n * 4) / t / 1e9;
    rows.push_back({{"bytes", n * 4},
                    {"seconds", t},
                    {"algbw_gbps", algbw},
                    {"busbw_gbps", algbw * bus_factor}});
    if (dist::is_primary() && !args.flag("json"))
      std::printf("%12lld %12.1f %14.3f %14.3f\n", static_cast<long long>(n * 4), t * 1e6, algbw,
                  algbw * bus_factor);
  }
  if (dist::is_primary() && args.flag("json"))
    std::printf("%s\n", nlohmann::json({{"bench", "allreduce"},
                                        {"device", device.str()},
                                        {"world_size", world},
                                        {"copy_only", copy_only},
                                        {"rows", rows}})
                            .dump(2)
                            .c_str());
  return 0;
}

}  // namespace distill::cli
