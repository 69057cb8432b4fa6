// Data-parallel building blocks in one process: the gradient-ready hooks of the backward engine,
// gradient buckets (reverse registration order, size cap, a bucket starts while the backward is
// still running, zeros for parameters the backward never reached, identity at world size 1,
// also through NCCL on a GPU), the optimizer's reducer hook with gradient accumulation, sync
// BatchNorm against the batch_norm kernel, the "distributed" config block, and the launcher
// detection. Two real processes: test_distributed.cpp.
#include <cstdlib>

#include "core/distributed.h"
#include "core/grad_hooks.h"
#include "core/ops_norm.h"
#include "layers/basic.h"
#include "layers/sync_batch_norm.h"
#include "tests/models/model_test_util.h"
#include "train/data_parallel.h"

namespace distill::train {
namespace {

using testing::message_has;
using testing::random_tensor;

Tensor leaf(const Shape& shape, uint64_t seed) {
  Tensor t = random_tensor(shape, seed);
  t.set_requires_grad(true);
  return t;
}

TEST(GradHooks, FireOnceAfterTheLastContributionOfEachBackward) {
  Tensor x = leaf({3}, 1);
  const Tensor a = random_tensor({3}, 2), b = random_tensor({3}, 3);
  int calls = 0;
  std::vector<float> seen;
  GradHookHandle h = add_grad_ready_hook(x, [&] {
    ++calls;
    seen = x.grad().to_float_vector();
  });
  // x feeds two products: the hook must see the sum of both contributions.
  sum(add(mul(x, a), mul(x, b))).backward();
  EXPECT_EQ(calls, 1);
  const auto av = a.to_float_vector(), bv = b.to_float_vector();
  ASSERT_EQ(seen.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_FLOAT_EQ(seen[i], av[i] + bv[i]);
  // A second backward (gradient accumulation) fires again, with the accumulated gradient.
  sum(mul(x, a)).backward();
  EXPECT_EQ(calls, 2);
  for (size_t i = 0; i < 3; ++i) EXPECT_FLOAT_EQ(seen[i], 2 * av[i] + bv[i]);
  // A backward that does not reach x does not fire it; a removed hook never fires.
  Tensor z = leaf({3}, 4);
  sum(mul(z, a)).backward();
  EXPECT_EQ(calls, 2);
  h = GradHookHandle();
  sum(mul(x, a)).backward();
  EXPECT_EQ(calls, 2);
  EXPECT_THROW((void)add_grad_ready_hook(mul(x, a), [] {}), Error);
}

// y = sum(((x * p0) * p1) * p2) with p_k of size sizes[k]: the backward reaches p2 first, p0 last.
struct Chain {
  explicit Chain(int64_t n) {
    for (uint64_t k = 0; k < 3; ++k) params.push_back(leaf({n}, 10 + k));
    unused = leaf({n}, 20);  // registered, never in the graph
    params.push_back(unused);
  }
  Tensor loss(uint64_t seed) const {
    Tensor h = random_tensor({params[0].numel()}, seed);
    for (int k = 0; k < 3; ++k) h = mul(h, params[static_cast<size_t>(k)]);
    return sum(h);
  }
  std::vector<Tensor> params;
  Tensor unused;
};

TEST(GradientBuckets, ReverseOrderUnderTheCapAndStartedDuringTheBackward) {
  const int64_t n = 1024;  // 4 KB per parameter
  Chain chain(n);
  // Before the buckets' own hooks: when p0 (the last gradient) is ready, p2's and p1's buckets
  // must already be in flight.
  std::vector<size_t> launched_when_p0_ready;
  GradientBuckets* watched = nullptr;
  GradHookHandle watch = add_grad_ready_hook(chain.params[0], [&] {
    if (watched) launched_when_p0_ready = watched->launched();
  });
  GradientBuckets buckets(chain.params, /*bucket_mb=*/6.0 / 1024);  // 6 KB: one 4 KB param each
  watched = &buckets;
  ASSERT_EQ(buckets.buckets().size(), 4u);
  EXPECT_EQ(buckets.buckets()[0], (std::vector<size_t>{3}));  // reverse registration order
  EXPECT_EQ(buckets.buckets()[1], (std::vector<size_t>{2}));
  EXPECT_EQ(buckets.buckets()[3], (std::vector<size_t>{0}));
  GradientBuckets wide(chain.params, 1.0);  // everything fits one bucket
  EXPECT_EQ(wide.buckets().size(), 1u);
  watched = &buckets;

  buckets.before_backward(/*steps=*/true);
  wide.before_backward(false);  // a micro-batch that does not step: no reduction
  const Tensor loss = chain.loss(30);
  loss.backward();
  // The unused parameter's bucket comes first in launch order and blocks the rest until the
  // step: collectives start in the same order on every rank.
  EXPECT_TRUE(launched_when_p0_ready.empty());
  EXPECT_EQ(buckets.ready_count(), 3);
  EXPECT_TRUE(wide.launched().empty());
  EXPECT_EQ(wide.ready_count(), 0);
  std::vector<std::vector<float>> before;
  for (int k = 0; k < 3; ++k)
    before.push_back(chain.params[static_cast<size_t>(k)].grad().to_float_vector());
  buckets.before_step();
  EXPECT_EQ(buckets.launched(), (std::vector<size_t>{0, 1, 2, 3}));
  for (int k = 0; k < 3; ++k)  // world size 1: the mean over one rank is the gradient itself
    EXPECT_EQ(chain.params[static_cast<size_t>(k)].grad().to_float_vector(),
              before[static_cast<size_t>(k)]);
  EXPECT_EQ(chain.unused.grad().to_float_vector(), std::vector<float>(n, 0.0f));
}

TEST(GradientBuckets, ABucketStartsAsSoonAsItsGradientsAreReady) {
  const int64_t n = 1024;
  Chain chain(n);
  std::vector<Tensor> used(chain.params.begin(), chain.params.begin() + 3);
  std::vector<size_t> launched_when_p0_ready;
  GradientBuckets* watched = nullptr;
  GradHookHandle watch = add_grad_ready_hook(used[0], [&] {
    if (watched) launched_when_p0_ready = watched->launched();
  });
  GradientBuckets buckets(used, 6.0 / 1024);
  watched = &buckets;
  buckets.before_backward(true);
  chain.loss(31).backward();
  // p2 (bucket 0) and p1 (bucket 1) were in flight before p0's gradient was final.
  EXPECT_EQ(launched_when_p0_ready, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(buckets.launched(), (std::vector<size_t>{0, 1, 2}));
  buckets.before_step();
}

TEST(GradientBuckets, OptimizerWithReducerMatchesThePlainOptimizerWithAccumulation) {
  const Tensor x = random_tensor({8, 6}, 41);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 3, 1, 2, 2, 0, 3, 1}, {8});
  auto run = [&](bool reducer) {
    Generator g(42);
    nn::Linear model(6, 4, true, &g);
    OptimizerConfig cfg;
    cfg.accumulation_steps = 2;
    cfg.max_grad_norm = 0.5;
    LrSchedule sched;
    sched.base_lr = 0.1;
    Optimizer opt(model, cfg, sched);
    GradientBuckets buckets(model, 25);
    if (reducer) opt.set_gradient_reducer(&buckets);
    for (int step = 0; step < 3; ++step)
      for (int64_t m = 0; m < 2; ++m)
        opt.accumulate(cross_entropy(model.forward(slice(x, 0, m * 4, (m + 1) * 4)),
                                     slice(y, 0, m * 4, (m + 1) * 4)));
    return model.weight.to_float_vector();
  };
  EXPECT_EQ(run(true), run(false));  // bit-identical at world size 1
}

// On a GPU the same reduction runs through NCCL (a one-rank communicator).
TEST(GradientBuckets, CudaGradientsGoThroughNcclAtWorldSizeOne) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  if (!dist::nccl_compiled()) GTEST_SKIP() << "NCCL not compiled in";
  Generator g(43);
  nn::Linear model(64, 32, true, &g);
  model.to(Device::cuda(0));
  GradientBuckets buckets(model, 0.004);  // 8 KB weight + bias: two buckets
  EXPECT_EQ(buckets.buckets().size(), 2u);
  buckets.before_backward(true);
  const Tensor x = random_tensor({16, 64}, 44).to(Device::cuda(0));
  sum(model.forward(x)).backward();
  const auto before = model.weight.grad().to_float_vector();
  buckets.before_step();
  EXPECT_EQ(model.weight.grad().to_float_vector(), before);
  Tensor t = random_tensor({1000}, 45).to(Device::cuda(0));
  const auto want = t.to_float_vector();
  dist::all_reduce_sum(t);
  EXPECT_EQ(t.to_float_vector(), want);
}

// In one process the global batch is the local one: sync BatchNorm (sums over ranks, composed of
// differentiable ops) must equal the batch_norm kernel, forward, backward and running statistics.
TEST(SyncBatchNorm, EqualsBatchNormInOneProcess) {
  const Tensor x0 = random_tensor({4, 3, 5, 5}, 60);
  const Tensor w0 = random_tensor({3}, 61), b0 = random_tensor({3}, 62);
  Tensor x1 = x0.clone().set_requires_grad(true), x2 = x0.clone().set_requires_grad(true);
  Tensor w1 = w0.clone().set_requires_grad(true), b1 = b0.clone().set_requires_grad(true);
  Tensor w2 = w0.clone().set_requires_grad(true), b2 = b0.clone().set_requires_grad(true);
  Tensor rm1 = random_tensor({3}, 63), rv1 = add(mul(random_tensor({3}, 64), 0.1), 1.0);
  Tensor rm2 = rm1.clone(), rv2 = rv1.clone();
  const Tensor upstream = random_tensor({4, 3, 5, 5}, 65);
  const Tensor y1 = batch_norm(x1, w1, b1, rm1, rv1, true, 0.1, 1e-5);
  const Tensor y2 = nn::sync_batch_norm(x2, w2, b2, rm2, rv2, 0.1, 1e-5);
  EXPECT_TRUE(testing::all_close(y2, y1, 1e-5, 1e-4));
  EXPECT_TRUE(testing::all_close(rm2, rm1, 1e-6, 1e-5));
  EXPECT_TRUE(testing::all_close(rv2, rv1, 1e-6, 1e-5));
  sum(mul(y1, upstream)).backward();
  sum(mul(y2, upstream)).backward();
  EXPECT_TRUE(testing::all_close(x2.grad(), x1.grad(), 1e-5, 1e-4));
  EXPECT_TRUE(testing::all_close(w2.grad(), w1.grad(), 1e-5, 1e-4));
  EXPECT_TRUE(testing::all_close(b2.grad(), b1.grad(), 1e-5, 1e-4));
  EXPECT_FALSE(nn::sync_batch_norm_enabled());  // off unless the run config asks for it
}

TEST(DataParallelConfig, ParsesAndNamesBadFields) {
  const auto c = data_parallel_config_from_json(
      nlohmann::json::parse(R"({"bucket_mb": 4, "sync_batch_norm": true})"), "run.json");
  EXPECT_EQ(c.bucket_mb, 4);
  EXPECT_TRUE(c.sync_batch_norm);
  auto error = [](const char* text) {
    try {
      data_parallel_config_from_json(nlohmann::json::parse(text), "run.json: distributed");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error(R"({"bucket_mb": 0})").find("run.json: distributed: bucket_mb"),
            std::string::npos);
  EXPECT_NE(error(R"({"sync_batch_norm": 1})").find("sync_batch_norm must be true or false"),
            std::string::npos);
  EXPECT_NE(error(R"({"buckets": 1})").find("unknown key 'buckets'"), std::string::npos);
  EXPECT_THROW(GradientBuckets(std::vector<Tensor>{leaf({2}, 1)}, 0), Error);
}

TEST(Distributed, OneProcessWithoutALauncherIsWorldSizeOne) {
  for (const char* v :
       {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"})
    if (std::getenv(v)) GTEST_SKIP() << v << " is set: the tests run under a launcher";
  EXPECT_EQ(dist::launcher_world_size(), 1);
  dist::init_from_environment();
  EXPECT_EQ(dist::world_size(), 1);
  EXPECT_EQ(dist::rank(), 0);
  EXPECT_TRUE(dist::is_primary());
  EXPECT_FALSE(dist::distributed());
  // Collectives of one process leave the data as it is.
  Tensor t = random_tensor({7}, 50);
  const auto want = t.to_float_vector();
  dist::all_reduce_sum(t);
  dist::broadcast(t);
  EXPECT_EQ(t.to_float_vector(), want);
  std::vector<int64_t> counts{1, 2, 3};
  dist::all_reduce_sum(counts);
  EXPECT_EQ(counts, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(dist::all_gather(std::vector<float>{1.5f}), std::vector<float>{1.5f});
  EXPECT_EQ(dist::all_reduce_max(4), 4);
  // A launcher's variables name the world size (srun's job step, not the allocation).
  setenv("SLURM_STEP_NUM_TASKS", "4", 1);
  EXPECT_EQ(dist::launcher_world_size(), 4);
  setenv("SLURM_STEP_NUM_TASKS", "four", 1);
  EXPECT_EQ(dist::launcher_world_size(), 1);
  unsetenv("SLURM_STEP_NUM_TASKS");
}

}  // namespace
}  // namespace distill::train
