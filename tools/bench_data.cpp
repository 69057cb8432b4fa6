// `distill bench data`: loader throughput (images per second) on WebDataset tar shards with the
// training augmentation (random resized crop to --size, bicubic; flip; CLIP normalisation) for
// each worker count, optionally next to a peer command (tools/bench/torch_data.py: torchvision +
// DataLoader with the same transforms and workers) run in the same invocation.
#include <array>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/loader.h"
#include "data/webdataset.h"
#include "tools/cli.h"

namespace distill::cli {

namespace {

std::vector<int> parse_workers(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    try {
      size_t pos = 0;
      const int v = std::stoi(tok, &pos);
      if (pos != tok.size() || v < 1) throw std::invalid_argument("bad");
      out.push_back(v);
    } catch (const std::exception&) {
      throw UsageError(
          "distill bench data: --workers expects positive integers separated by "
          "commas, got '" +
          s + "'");
    }
  }
  if (out.empty()) throw UsageError("distill bench data: --workers is empty");
  return out;
}

// Images per second after `warmup` batches, until `images` more have arrived.
double measure(const std::vector<std::string>& shards, int workers, int64_t images, int size,
               int64_t batch, int warmup) {
  data::AugmentOptions aug;
  aug.size = size;
  data::LoaderOptions o;
  o.batch_size = batch;
  o.workers = workers;
  o.shuffle = true;
  o.shuffle_buffer = 1000;
  o.seed = 1;
  data::DataLoader loader(shards, 0, std::make_shared<data::TrainAugment>(aug), o);
  using Clock = std::chrono::steady_clock;
  int64_t seen = 0, batches = 0;
  Clock::time_point t0 = Clock::now();
  for (int64_t epoch = 0; seen < images; ++epoch) {
    loader.start_epoch(epoch);
    data::Batch b;
    while (seen < images && loader.next(b)) {
      if (++batches == warmup) t0 = Clock::now();
      if (batches > warmup) seen += b.size();
    }
  }
  return static_cast<double>(seen) / std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs the peer command with the same settings and returns its JSON (or an error row).
nlohmann::json run_peer(const std::string& command, const std::string& spec,
                        const std::string& workers, int64_t images, int size, int64_t batch) {
  const std::string cmd = command + " --data '" + spec + "' --workers " + workers + " --images " +
                          std::to_string(images) + " --size " + std::to_string(size) + " --batch " +
                          std::to_string(batch) + " --json";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {{"error", "cannot run: " + cmd}};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  try {
    if (status != 0) throw std::runtime_error("exit status " + std::to_string(status));
    return nlohmann::json::parse(out);
  } catch (const std::exception& e) {
    return {{"error", std::string("peer failed (") + e.what() + "): " + cmd}};
  }
}

}  // namespace

int bench_data(int argc, char** argv) {
  Args args(
      "bench data",
      {{"data", true, "tar shard pattern", "../shared/data/cifar10-jpg/train-{0000..0004}.tar"},
       {"workers", true, "comma-separated worker thread counts", "1,2"},
       {"images", true, "images timed per worker count (after the warm-up batches)", "3000"},
       {"size", true, "output size of the random resized crop", "224"},
       {"batch", true, "batch size", "64"},
       {"peer", true, "peer command, e.g. 'python3 tools/bench/torch_data.py'", ""},
       {"json", false, "print machine-readable JSON", ""},
       {"help", false, "show this help", ""}});
  args.parse(argc, argv, 3);
  if (args.flag("help")) {
    std::fputs(
        args.help("Data loader throughput on tar shards with training augmentation.").c_str(),
        stdout);
    return 0;
  }
  if (!args.positional().empty())
    throw UsageError("distill bench data: unexpected argument '" + args.positional()[0] + "'");
  const std::string spec =
      args.value_or("data", "../shared/data/cifar10-jpg/train-{0000..0004}.tar");
  const std::string workers_s = args.value_or("workers", "1,2");
  const auto workers = parse_workers(workers_s);
  const int64_t images = args.int_or("images", 3000);
  const int size = static_cast<int>(args.int_or("size", 224));
  const int64_t batch = args.int_or("batch", 64);
  if (images < 1 || size < 1 || batch < 1)
    throw UsageError("distill bench data: --images, --size and --batch must be positive");
  const auto shards = data::expand_shard_pattern(spec);

  nlohmann::json peer;
  if (auto cmd = args.value("peer")) peer = run_peer(*cmd, spec, workers_s, images, size, batch);
  auto peer_rate = [&](int w) -> double {
    if (!peer.contains("rows")) return 0;
    for (const auto& r : peer["rows"])
      if (r.value("workers", 0) == w) return r.value("images_per_s", 0.0);
    return 0;
  };

  const bool json = args.flag("json");
  if (!json) {
    std::printf(
        "data loader on %zu shard(s), random resized crop to %d (bicubic) + flip + "
        "normalise, batch %lld\n",
        shards.size(), size, static_cast<long long>(batch));
    std::printf("%-8s %14s %14s %8s\n", "workers", "ours img/s", "peer img/s", "ratio");
  }
  nlohmann::json rows = nlohmann::json::array();
  for (int w : workers) {
    const double ours = measure(shards, w, images, size, batch, 2);
    const double theirs = peer_rate(w);
    nlohmann::json row = {{"workers", w}, {"images_per_s", ours}};
    if (theirs > 0) {
      row["peer_images_per_s"] = theirs;
      row["ratio"] = ours / theirs;
    }
    rows.push_back(row);
    if (!json) {
      if (theirs > 0) {
        std::printf("%-8d %14.1f %14.1f %8.2f\n", w, ours, theirs, ours / theirs);
      } else {
        std::printf("%-8d %14.1f %14s %8s\n", w, ours, "-", "-");
      }
      std::fflush(stdout);
    }
  }
  if (!json && peer.contains("error"))
    std::printf("peer: %s\n", peer["error"].get<std::string>().c_str());
  if (json) {
    nlohmann::json j = {{"bench", "data"}, {"data", spec},     {"size", size},
                        {"batch", batch},  {"images", images}, {"rows", rows}};
    if (!peer.is_null()) j["peer"] = peer;
    std::printf("%s\n", j.dump(2).c_str());
  }
  return 0;
}

}  // namespace distill::cli
