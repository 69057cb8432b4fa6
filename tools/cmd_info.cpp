// `distill info`: what this build can use on this machine.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/device.h"
#include "core/distributed.h"
#include "core/threads.h"
#include "kernels/device.h"
#include "kernels/matmul.h"
#include "tools/cli.h"

namespace distill::cli {

int cmd_info(int argc, char** argv) {
  // `--data SPEC` describes a dataset instead (tools/cmd_info_data.cpp).
  for (int i = 2; i < argc; ++i)
    if (std::string(argv[i]).rfind("--data", 0) == 0) return cmd_info_data(argc, argv);
  Args args("info",
            {{"json", false, "print machine-readable JSON", ""},
             {"data", true, "describe a dataset instead (see 'distill info --data x --help')", ""},
             {"model", true, "describe a model preset instead (parameters, config)", ""},
             {"tensors", false, "with --model: list the tensor names and shapes", ""},
             {"help", false, "show this help", ""}});
  args.parse(argc, argv, 2);
  if (args.flag("help")) {
    std::fputs(args.help("Prints the version, whether CUDA is compiled in, the GPUs found, the "
                         "BLAS library and the thread count.")
                   .c_str(),
               stdout);
    return 0;
  }
  if (!args.positional().empty())
    throw UsageError("distill info: unexpected argument '" + args.positional()[0] + "'");
  if (const auto model = args.value("model"))
    return info_model(*model, args.flag("json"), args.flag("tensors"));

  nlohmann::json j;
  j["version"] = DISTILL_VERSION;
  j["cuda_compiled"] = cuda_compiled();
  j["cuda_runtime"] = kernels::cuda::runtime_version_string();
  nlohmann::json gpus = nlohmann::json::array();
  for (const auto& p : kernels::cuda::device_properties()) {
    gpus.push_back({{"index", p.index},
                    {"name", p.name},
                    {"memory_bytes", p.total_memory},
                    {"compute_capability", std::to_string(p.major) + "." + std::to_string(p.minor)},
                    {"multiprocessors", p.multiprocessors}});
  }
  j["gpus"] = gpus;
  j["blas"] = kernels::cpu::blas_name();
  j["threads"] = num_threads();
  j["distributed"] = {{"mpi", dist::mpi_compiled()},
                      {"nccl", dist::nccl_compiled()},
                      {"world_size", dist::world_size()}};

  if (args.flag("json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("distill %s\n", DISTILL_VERSION);
  std::printf(
      "  CUDA       %s\n",
      cuda_compiled()
          ? ("compiled in (runtime " + kernels::cuda::runtime_version_string() + ")").c_str()
          : "not compiled in");
  if (gpus.empty()) {
    std::printf("  GPUs       no GPU\n");
  } else {
    for (const auto& g : gpus) {
      std::printf("  GPU %d      %s, %.1f GiB, compute capability %s, %d SMs\n",
                  g["index"].get<int>(), g["name"].get<std::string>().c_str(),
                  static_cast<double>(g["memory_bytes"].get<size_t>()) / (1 << 30),
                  g["compute_capability"].get<std::string>().c_str(),
                  g["multiprocessors"].get<int>());
    }
  }
  std::printf("  BLAS       %s\n", kernels::cpu::blas_name());
  std::printf("  threads    %d\n", num_threads());
  std::printf("  parallel   MPI %s, NCCL %s, world size %d\n",
              dist::mpi_compiled() ? "compiled in" : "not compiled in",
              dist::nccl_compiled() ? "compiled in" : "not compiled in", dist::world_size());
  return 0;
}

}  // namespace distill::cli
