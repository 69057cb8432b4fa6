// Training checkpoints: a run resumed from a checkpoint ends bit-identical to an uninterrupted
// one (model, optimizer state, schedule, default and named generators, data position), the
// CheckpointManager's keep-last-K and latest.json under failed saves, saves killed at random
// points and saves on a full disk, clear errors for truncated, foreign and mismatched files, and
// the NaN / Inf guard.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/file_io.h"
#include "core/safetensors.h"
#include "layers/basic.h"
#include "tests/models/model_test_util.h"
#include "tests/test_util.h"
#include "train/atomic_file.h"
#include "train/checkpoint.h"

namespace distill::train {
namespace {

namespace fs = std::filesystem;
using testing::message_has;
using testing::TempDir;

// Linear -> LayerNorm -> ReLU -> Dropout (draws from the default generator) -> Linear.
class TinyMlp : public nn::Module {
 public:
  explicit TinyMlp(uint64_t seed, int64_t hidden = 16) : nn::Module("TinyMlp") {
    Generator g(seed);
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(8, hidden, true, &g));
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(hidden));
    drop = register_module("drop", std::make_shared<nn::Dropout>(0.2));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(hidden, 4, true, &g));
  }
  Tensor forward(const Tensor& x) const {
    return fc2->forward(drop->forward(relu(norm->forward(fc1->forward(x)))));
  }
  std::shared_ptr<nn::Linear> fc1, fc2;
  std::shared_ptr<nn::LayerNorm> norm;
  std::shared_ptr<nn::Dropout> drop;
};

OptimizerConfig adamw_config() {
  OptimizerConfig c;
  c.weight_decay = 0.1;
  c.max_grad_norm = 1.0;
  c.accumulation_steps = 2;
  return c;
}

LrSchedule cosine_schedule() {
  LrSchedule s;
  s.kind = ScheduleKind::Cosine;
  s.base_lr = 3e-3;
  s.warmup_steps = 2;
  s.total_steps = 8;
  return s;
}

// Optimizer steps [from, to): each step two micro-batches of random data from `data`.
void train_steps(const TinyMlp& model, Optimizer& opt, Generator& data, int64_t from, int64_t to) {
  for (int64_t step = from; step < to; ++step)
    for (int micro = 0; micro < 2; ++micro) {
      const Tensor x = randn({8, 8}, {}, &data);
      const Tensor y = argmax(randn({8, 4}, {}, &data), 1);
      opt.accumulate(cross_entropy(model.forward(x), y));
    }
}

// Every tensor's bytes, in order: bit-identical means equal.
std::vector<std::pair<std::string, std::vector<unsigned char>>> bytes_of(
    const nn::NamedTensors& tensors) {
  std::vector<std::pair<std::string, std::vector<unsigned char>>> out;
  for (const auto& [name, t] : tensors) {
    const Tensor c = t.contiguous();
    const auto* p = static_cast<const unsigned char*>(c.data_ptr());
    out.emplace_back(name, std::vector<unsigned char>(p, p + c.nbytes()));
  }
  return out;
}

TEST(TrainCheckpoint, ResumedRunIsBitIdenticalToAnUninterruptedOne) {
  TempDir dir;
  const int64_t total = 8, half = 4;
  const nlohmann::json config = {{"name", "resume-test"}, {"lr", 3e-3}};

  // Uninterrupted.
  manual_seed(7);
  Generator data_a(99);
  TinyMlp model_a(1);
  Optimizer opt_a(model_a, adamw_config(), cosine_schedule());
  train_steps(model_a, opt_a, data_a, 0, total);
  const uint64_t dropout_draws_a = default_generator().offset();

  // Half, checkpoint, then everything fresh and differently seeded, load, the other half.
  std::string saved;
  {
    manual_seed(7);
    Generator data(99);
    TinyMlp model(1);
    Optimizer opt(model, adamw_config(), cosine_schedule());
    train_steps(model, opt, data, 0, half);
    TrainingProgress progress;
    progress.step = opt.step_count();
    progress.epoch = 1;
    progress.data_position = {{"epoch", 1}, {"batch", 8}};
    progress.config = config;
    progress.extra = {{"best_top1", 0.25}};
    CheckpointManager manager(dir.path().string());
    saved = manager.save(model, &opt, progress, {{"data", &data}});
  }
  manual_seed(12345);
  Generator data_b(555);
  TinyMlp model_b(2);
  Optimizer opt_b(model_b, adamw_config(), cosine_schedule());
  CheckpointManager manager(dir.path().string());
  ASSERT_EQ(manager.latest(), saved);
  const TrainingProgress progress =
      load_training_checkpoint(*manager.latest(), model_b, &opt_b, {{"data", &data_b}});
  EXPECT_EQ(progress.step, half);
  EXPECT_EQ(progress.epoch, 1);
  EXPECT_EQ(progress.data_position, (nlohmann::json{{"epoch", 1}, {"batch", 8}}));
  EXPECT_EQ(progress.config, config);
  EXPECT_EQ(progress.extra["best_top1"], 0.25);
  EXPECT_EQ(opt_b.step_count(), half);
  EXPECT_EQ(opt_b.current_lr(), cosine_schedule().lr(half));
  train_steps(model_b, opt_b, data_b, half, total);

  const auto want = bytes_of(model_a.state_dict()), got = bytes_of(model_b.state_dict());
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(got[i] == want[i]) << want[i].first << " differs";
  const auto want_opt = bytes_of(opt_a.state_tensors()), got_opt = bytes_of(opt_b.state_tensors());
  ASSERT_EQ(got_opt.size(), want_opt.size());
  for (size_t i = 0; i < want_opt.size(); ++i)
    EXPECT_TRUE(got_opt[i] == want_opt[i]) << want_opt[i].first << " differs";
  // The generators continued from the same states (the default one drives the dropout).
  EXPECT_EQ(default_generator().seed(), 7u);
  EXPECT_EQ(default_generator().offset(), dropout_draws_a);
  EXPECT_EQ(data_b.offset(), data_a.offset());
}

TEST(TrainCheckpoint, KeepsTheLastKAndLatestSurvivesFailedSaves) {
  TempDir dir;
  TinyMlp model(3);
  Optimizer opt(model, adamw_config(), cosine_schedule());
  CheckpointManager manager(dir.path().string(), 2);
  EXPECT_EQ(manager.latest(), std::nullopt);
  TrainingProgress progress;
  for (int64_t step = 1; step <= 3; ++step) {
    progress.step = step;
    manager.save(model, &opt, progress);
  }
  EXPECT_EQ(manager.list(),
            (std::vector<std::string>{manager.path_for_step(2), manager.path_for_step(3)}));
  EXPECT_EQ(manager.latest(), manager.path_for_step(3));

  // A failure after the file is written (the hook) leaves latest.json on step 3.
  manager.set_before_commit_hook(
      [](const std::string& path) { fail("injected failure after writing ", path); });
  progress.step = 4;
  EXPECT_THROW(manager.save(model, &opt, progress), Error);
  EXPECT_EQ(manager.latest(), manager.path_for_step(3));
  manager.set_before_commit_hook(nullptr);

  // A failure of the write itself: the target name is taken by a non-empty directory, so the
  // rename fails (works as root, unlike a read-only directory). Nothing half-written remains.
  progress.step = 5;
  fs::create_directories(manager.path_for_step(5));
  std::ofstream(manager.path_for_step(5) + "/occupied") << "x";
  try {
    manager.save(model, &opt, progress);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, manager.path_for_step(5))) << e.what();
  }
  EXPECT_EQ(manager.latest(), manager.path_for_step(3));
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << entry.path();
  // The previous good checkpoint still loads.
  TinyMlp other(4);
  Optimizer other_opt(other, adamw_config(), cosine_schedule());
  EXPECT_EQ(load_training_checkpoint(*manager.latest(), other, &other_opt).step, 3);

  // Temporary files of a killed save are cleaned up by the next save.
  std::ofstream(dir.file("ckpt-00000009.safetensors.tmp.1.0")) << "partial";
  progress.step = 6;
  manager.save(model, &opt, progress);
  EXPECT_FALSE(fs::exists(dir.file("ckpt-00000009.safetensors.tmp.1.0")));
  EXPECT_EQ(manager.latest(), manager.path_for_step(6));
  EXPECT_EQ(manager.list(),
            (std::vector<std::string>{manager.path_for_step(4), manager.path_for_step(6)}));
  const nlohmann::json pointer = nlohmann::json::parse(std::ifstream(dir.file("latest.json")));
  EXPECT_EQ(pointer["checkpoint"], "ckpt-00000006.safetensors");  // relative: the run can move
  EXPECT_EQ(pointer["step"], 6);
}

// A model of 2 MiB (a save takes milliseconds) whose every parameter holds the step it was
// saved at, so a checkpoint's contents show whether it is whole and which step it is.
constexpr int64_t kStampedInputs = 512, kStampedOutputs = 1024;

void stamp(const nn::Module& model, int64_t step) {
  for (const auto& [name, t] : model.state_dict())
    std::fill(t.data<float>(), t.data<float>() + t.numel(), static_cast<float>(step));
}

// Loads `path` into a fresh model and checks every value is the step its metadata names.
::testing::AssertionResult holds_its_step(const std::string& path, int64_t* step = nullptr) {
  nn::Linear loaded(kStampedInputs, kStampedOutputs);
  TrainingProgress p;
  try {
    p = load_training_checkpoint(path, loaded, nullptr);
  } catch (const Error& e) {
    return ::testing::AssertionFailure() << e.what();
  }
  for (const auto& [name, t] : loaded.state_dict())
    for (int64_t i = 0; i < t.numel(); ++i)
      if (t.data<float>()[i] != static_cast<float>(p.step))
        return ::testing::AssertionFailure() << path << ": " << name << "[" << i << "] is "
                                             << t.data<float>()[i] << ", not the step " << p.step;
  if (step) *step = p.step;
  return ::testing::AssertionSuccess();
}

TrainingProgress at_step(int64_t step) {
  TrainingProgress p;
  p.step = step;
  return p;
}

std::vector<std::string> temporary_files(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().find(".tmp.") != std::string::npos)
      out.push_back(entry.path().filename().string());
  return out;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A child process saves checkpoints back to back (step after step, as a training loop with
// frequent checkpoints does) and is SIGKILLed after a random delay, 32 times: before, during
// and after the data write, the fsyncs, the renames, the latest.json update and the pruning.
// After every kill latest.json names a whole checkpoint of a step at least as new as the last
// one known complete, every file under a final name is whole, and the next save clears the
// temporary files the kills left.
TEST(TrainCheckpoint, SavesKilledAtRandomPointsKeepTheLastCheckpoint) {
  TempDir dir;
  Generator init(1);
  nn::Linear model(kStampedInputs, kStampedOutputs, true, &init);
  CheckpointManager manager(dir.path().string(), 2);
  // One save's duration here, so the random delays spread over whole saves.
  const auto t0 = std::chrono::steady_clock::now();
  stamp(model, 0);
  manager.save(model, nullptr, at_step(0));
  const int64_t save_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::mt19937_64 rng(20240611);
  std::uniform_int_distribution<int64_t> delay_us(0, 2 * std::max<int64_t>(save_us, 1000));

  int64_t next_step = 1;
  int kills_inside_a_write = 0;
  for (int round = 0; round < 32; ++round) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(ready[0]);
      try {
        for (int64_t step = next_step;; ++step) {
          stamp(model, step);
          manager.save(model, nullptr, at_step(step));
          if (step == next_step && ::write(ready[1], "s", 1) != 1) ::_exit(2);
        }
      } catch (...) {
        ::_exit(1);
      }
    }
    ::close(ready[1]);
    char byte = 0;
    const ssize_t got = ::read(ready[0], &byte, 1);  // the child's first save is complete
    ::close(ready[0]);
    ::usleep(static_cast<useconds_t>(delay_us(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_EQ(got, 1) << "the saving child failed before its first save (status " << status << ")";
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the saving child stopped on its own (status " << status << ")";

    if (!temporary_files(dir.path()).empty()) ++kills_inside_a_write;
    const auto latest = manager.latest();
    ASSERT_TRUE(latest) << "round " << round;
    int64_t latest_step = -1;
    ASSERT_TRUE(holds_its_step(*latest, &latest_step)) << "round " << round;
    EXPECT_EQ(*latest, manager.path_for_step(latest_step));
    ASSERT_GE(latest_step, next_step) << "latest.json went back past a completed save";
    for (const auto& path : manager.list()) {
      int64_t step = -1;
      EXPECT_TRUE(holds_its_step(path, &step)) << "round " << round;
      EXPECT_EQ(path, manager.path_for_step(step));
    }
    next_step = latest_step + 1;  // as --resume continues
  }
  // Writing dominates a save, so some kills must have landed inside one (else this test did
  // not test what it claims).
  EXPECT_GT(kills_inside_a_write, 0);

  stamp(model, next_step);
  EXPECT_EQ(manager.save(model, nullptr, at_step(next_step)), manager.path_for_step(next_step));
  EXPECT_EQ(temporary_files(dir.path()), std::vector<std::string>{});
  EXPECT_EQ(manager.latest(), manager.path_for_step(next_step));
  EXPECT_TRUE(holds_its_step(*manager.latest()));
}

// A full disk during a save: part-way through the checkpoint's data (the injected ENOSPC, as
// write(2) fails on a full disk), at latest.json's own write, and a real failing write(2) (a
// file-size limit: EFBIG). Each is an error naming the file and the cause; latest.json and the
// previous checkpoint are untouched and load; nothing half-written is left under a checkpoint
// name or as a temporary file.
TEST(TrainCheckpoint, FullDiskDuringASaveKeepsThePreviousCheckpoint) {
  struct ClearInjection {
    ~ClearInjection() { inject_write_failure_for_testing(-1); }
  } clear_injection;
  TempDir dir;
  TinyMlp model(3);
  Optimizer opt(model, adamw_config(), cosine_schedule());
  CheckpointManager manager(dir.path().string(), 3);
  manager.save(model, &opt, at_step(1));
  const std::string pointer = dir.file("latest.json");
  const std::string pointer_before = file_bytes(pointer);
  const std::string checkpoint_before = file_bytes(manager.path_for_step(1));
  const auto expect_untouched = [&](const char* when) {
    EXPECT_EQ(file_bytes(pointer), pointer_before) << when;
    EXPECT_EQ(file_bytes(manager.path_for_step(1)), checkpoint_before) << when;
    EXPECT_EQ(temporary_files(dir.path()), std::vector<std::string>{}) << when;
    TinyMlp other(4);
    Optimizer other_opt(other, adamw_config(), cosine_schedule());
    EXPECT_EQ(load_training_checkpoint(*manager.latest(), other, &other_opt).step, 1) << when;
  };
  const auto expect_error = [&](int64_t step, const std::string& file, const std::string& cause) {
    try {
      manager.save(model, &opt, at_step(step));
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, file)) << e.what();
      EXPECT_TRUE(message_has(e, cause)) << e.what();
    }
    inject_write_failure_for_testing(-1);
  };

  inject_write_failure_for_testing(1000);  // in the header and tensors of the new checkpoint
  expect_error(2, manager.path_for_step(2), "No space left on device (the disk is full)");
  EXPECT_FALSE(fs::exists(manager.path_for_step(2)));
  expect_untouched("disk full in the checkpoint");

  // The checkpoint is written whole, then the disk fills up before latest.json is.
  manager.set_before_commit_hook([](const std::string&) { inject_write_failure_for_testing(5); });
  expect_error(3, pointer, "the disk is full");
  manager.set_before_commit_hook(nullptr);
  expect_untouched("disk full in latest.json");

  // A real write(2) failure: the file-size limit (SIGXFSZ ignored, so write returns EFBIG).
  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit small_limit = old_limit;
  small_limit.rlim_cur = 1024;
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small_limit), 0);
  try {
    manager.save(model, &opt, at_step(4));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, manager.path_for_step(4))) << e.what();
    EXPECT_TRUE(message_has(e, "File too large")) << e.what();
  }
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old_limit), 0);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_FALSE(fs::exists(manager.path_for_step(4)));
  expect_untouched("file-size limit");

  // With space again the next save goes through and clears nothing it should keep.
  EXPECT_EQ(manager.save(model, &opt, at_step(5)), manager.path_for_step(5));
  EXPECT_EQ(manager.latest(), manager.path_for_step(5));
}

TEST(TrainCheckpoint, TruncatedForeignAndMismatchedFilesAreClearErrors) {
  TempDir dir;
  manual_seed(1);
  TinyMlp model(5);
  Optimizer opt(model, adamw_config(), cosine_schedule());
  Generator data(6);
  train_steps(model, opt, data, 0, 1);
  const std::string path = dir.file("good.safetensors");
  save_training_checkpoint(path, model, &opt, TrainingProgress{});
  const auto before = bytes_of(model.state_dict());

  auto expect_error = [&](const std::function<void()>& f, const std::string& file,
                          const std::string& text) {
    try {
      f();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, file)) << e.what();
      EXPECT_TRUE(message_has(e, text)) << e.what();
    }
  };
  // Truncated.
  const std::string truncated = dir.file("truncated.safetensors");
  fs::copy_file(path, truncated);
  fs::resize_file(truncated, fs::file_size(path) - 100);
  expect_error([&] { load_training_checkpoint(truncated, model, &opt); }, truncated, "truncated");
  // Not a training checkpoint (a converted model file).
  const std::string foreign = dir.file("model.safetensors");
  save_safetensors(foreign, model.state_dict());
  expect_error([&] { load_training_checkpoint(foreign, model, &opt); }, foreign,
               "not a distill training checkpoint");
  // Another model: every missing / unexpected / mis-shaped name is listed (the model is
  // checked before the optimizer state, so the error speaks of the model).
  TinyMlp wider(7, 32);
  Optimizer wider_opt(wider, adamw_config(), cosine_schedule());
  expect_error([&] { load_training_checkpoint(path, wider, &wider_opt); }, path,
               "does not match the TinyMlp (0 missing, 0 unexpected, 5 of the wrong shape)");
  nn::Linear linear(8, 4);
  expect_error([&] { load_training_checkpoint(path, linear, nullptr); }, path, "unexpected");
  // Another optimizer kind: refused before the model is touched.
  OptimizerConfig sgd;
  sgd.kind = OptimizerKind::SGD;
  Optimizer sgd_opt(model, sgd, LrSchedule{});
  expect_error([&] { load_training_checkpoint(path, model, &sgd_opt); }, path, "unexpected");
  EXPECT_TRUE(bytes_of(model.state_dict()) == before);
  // A generator the file does not hold.
  Generator aug(8);
  expect_error(
      [&] {
        load_training_checkpoint(path, model, &opt, {{"augment", &aug}});
      },
      path, "augment");
  // Saved without an optimizer, loaded with one.
  const std::string model_only = dir.file("model_only.safetensors");
  save_training_checkpoint(model_only, model, nullptr, TrainingProgress{});
  expect_error([&] { load_training_checkpoint(model_only, model, &opt); }, model_only,
               "no optimizer state");
  EXPECT_EQ(load_training_checkpoint(model_only, model, nullptr).step, 0);
  // A checkpoint pointer naming a missing file.
  write_file_atomically(dir.file("latest.json"), R"({"checkpoint": "gone.safetensors"})");
  expect_error([&] { CheckpointManager(dir.path().string()).latest(); }, "latest.json",
               "gone.safetensors");
  expect_error([&] { write_file_atomically(dir.file("no/such/dir/x.json"), "{}"); },
               "no/such/dir/x.json", "");
}

TEST(TrainCheckpoint, NanGuardNamesTheStepAndTheLastGoodCheckpoint) {
  EXPECT_NO_THROW(check_finite(1.5, 10, ""));
  try {
    check_finite(NAN, 42, "runs/x/ckpt-00000040.safetensors");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "NaN at step 42")) << e.what();
    EXPECT_TRUE(message_has(e, "runs/x/ckpt-00000040.safetensors")) << e.what();
  }
  try {
    check_finite(Tensor::from_vector(std::vector<float>{INFINITY}, {}), 3, "");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "+Inf at step 3")) << e.what();
    EXPECT_TRUE(message_has(e, "no checkpoint was written yet")) << e.what();
  }
}

}  // namespace
}  // namespace distill::train
