// StopOnSignal: the first SIGINT/SIGTERM becomes a flag (the process lives on), the second gets
// the default action, and the previous handlers come back when the guard goes.
#include <csignal>

#include "tests/test_util.h"
#include "train/interrupt.h"

namespace distill::train {
namespace {

sighandler_t current_handler(int signal) {
  struct sigaction now {};
  sigaction(signal, nullptr, &now);
  return now.sa_handler;
}

TEST(StopOnSignal, FirstSignalSetsTheFlagAndTheSecondIsDefault) {
  const sighandler_t before = current_handler(SIGTERM);
  {
    StopOnSignal guard;
    EXPECT_EQ(stop_signal(), 0);
    std::raise(SIGTERM);
    EXPECT_EQ(stop_signal(), SIGTERM);
    EXPECT_EQ(signal_name(stop_signal()), "SIGTERM");
    EXPECT_EQ(current_handler(SIGTERM), SIG_DFL);  // a second one would end the process
    EXPECT_NE(current_handler(SIGINT), SIG_DFL);
  }
  EXPECT_EQ(stop_signal(), 0);
  EXPECT_EQ(current_handler(SIGTERM), before);
  EXPECT_EQ(signal_name(SIGINT), "SIGINT");
  const Interrupted e(SIGINT, "stopped");
  EXPECT_EQ(e.signal(), SIGINT);
}

TEST(StopOnSignal, CtrlCIsCaughtLikeSigterm) {
  const sighandler_t before = current_handler(SIGINT);
  {
    StopOnSignal guard;
    std::raise(SIGINT);
    EXPECT_EQ(stop_signal(), SIGINT);
    EXPECT_EQ(signal_name(stop_signal()), "SIGINT");
    EXPECT_EQ(current_handler(SIGINT), SIG_DFL);  // a second Ctrl-C ends the process
  }
  EXPECT_EQ(stop_signal(), 0);
  EXPECT_EQ(current_handler(SIGINT), before);
}

}  // namespace
}  // namespace distill::train
