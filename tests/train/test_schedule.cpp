// Learning-rate schedules against values computed by hand from PyTorch / Hugging Face formulas.
#include <cmath>
#include <numbers>

#include "tests/test_util.h"
#include "train/schedule.h"

namespace distill::train {
namespace {

using testing::message_has;

TEST(TrainSchedule, CosineWithWarmupMatchesHuggingFace) {
  LrSchedule s;
  s.kind = ScheduleKind::Cosine;
  s.base_lr = 0.1;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.min_lr_ratio = 0.1;
  // Warmup: base * step / warmup (0 at the first step, as get_cosine_schedule_with_warmup).
  EXPECT_DOUBLE_EQ(s.lr(0), 0.0);
  EXPECT_DOUBLE_EQ(s.lr(5), 0.05);
  EXPECT_DOUBLE_EQ(s.lr(10), 0.1);
  // progress 0.25: 0.5 (1 + cos(pi/4)) = 0.8535533905932737; 0.1 (0.1 + 0.9 * that).
  EXPECT_NEAR(s.lr(35), 0.1 * (0.1 + 0.9 * 0.8535533905932737), 1e-15);
  EXPECT_NEAR(s.lr(60), 0.1 * (0.1 + 0.9 * 0.5), 1e-15);  // half way
  EXPECT_NEAR(s.lr(110), 0.01, 1e-15);                    // the end: min_lr_ratio * base
  EXPECT_NEAR(s.lr(500), 0.01, 1e-15);                    // stays there
  s.min_lr_ratio = 0.0;                                   // plain get_cosine_schedule_with_warmup
  EXPECT_NEAR(s.lr(60), 0.05, 1e-15);
  EXPECT_NEAR(s.lr(109), 0.1 * 0.5 * (1 + std::cos(std::numbers::pi * 99.0 / 100.0)), 1e-15);
}

TEST(TrainSchedule, CosineWithoutWarmupStartsAtBase) {
  LrSchedule s;
  s.kind = ScheduleKind::Cosine;
  s.base_lr = 3e-4;
  s.total_steps = 4;
  EXPECT_DOUBLE_EQ(s.lr(0), 3e-4);
  EXPECT_NEAR(s.lr(1), 3e-4 * 0.5 * (1 + std::sqrt(0.5)), 1e-18);
  EXPECT_NEAR(s.lr(2), 1.5e-4, 1e-18);
  EXPECT_NEAR(s.lr(4), 0.0, 1e-18);
}

TEST(TrainSchedule, StepDecayMatchesStepLR) {
  LrSchedule s;
  s.kind = ScheduleKind::Step;
  s.base_lr = 1.0;
  s.step_size = 3;
  s.gamma = 0.5;
  const double want[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25};
  for (int i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(s.lr(i), want[i]) << "step " << i;
  s.warmup_steps = 2;  // StepLR counted from the end of the warmup
  EXPECT_DOUBLE_EQ(s.lr(1), 0.5);
  EXPECT_DOUBLE_EQ(s.lr(2), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(4), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(5), 0.5);
}

TEST(TrainSchedule, ConstantWithWarmup) {
  LrSchedule s;
  s.base_lr = 0.2;
  s.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(s.lr(0), 0.0);
  EXPECT_DOUBLE_EQ(s.lr(2), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(4), 0.2);
  EXPECT_DOUBLE_EQ(s.lr(1000000), 0.2);
}

TEST(TrainSchedule, BadSchedulesAndJson) {
  LrSchedule s;
  s.kind = ScheduleKind::Cosine;
  s.warmup_steps = 10;
  s.total_steps = 10;
  try {
    s.lr(0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "total_steps")) << e.what();
  }
  EXPECT_THROW(LrSchedule().lr(-1), Error);

  const LrSchedule from = lr_schedule_from_json(
      {{"kind", "cosine"}, {"base_lr", 0.5}, {"warmup_steps", 2}, {"total_steps", 20}},
      "test.json: schedule");
  EXPECT_EQ(from.kind, ScheduleKind::Cosine);
  EXPECT_EQ(from.total_steps, 20);
  const LrSchedule again = lr_schedule_from_json(to_json(from), "round trip");
  for (int i = 0; i < 25; ++i) EXPECT_EQ(again.lr(i), from.lr(i));
  try {
    lr_schedule_from_json({{"kind", "cosine"}, {"totl_steps", 20}}, "test.json: schedule");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "test.json: schedule")) << e.what();
    EXPECT_TRUE(message_has(e, "totl_steps")) << e.what();
  }
  try {
    lr_schedule_from_json({{"kind", "linear"}}, "cfg");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "cfg")) << e.what();
    EXPECT_TRUE(message_has(e, "linear")) << e.what();
  }
  EXPECT_THROW(lr_schedule_from_json({{"kind", "step"}, {"gamma", 0}}, "cfg"), Error);
}

}  // namespace
}  // namespace distill::train
