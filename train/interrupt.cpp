#include "train/interrupt.h"

#include <csignal>

namespace distill::train {

namespace {

volatile std::sig_atomic_t g_signal = 0;
int g_depth = 0;
struct sigaction g_previous_int, g_previous_term;

extern "C" void on_stop_signal(int signal) {
  g_signal = signal;
  // A second signal gets the default action: the user can still kill a run that is stuck.
  std::signal(signal, SIG_DFL);
}

}  // namespace

StopOnSignal::StopOnSignal() {
  if (g_depth++ > 0) return;
  g_signal = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &g_previous_int);
  sigaction(SIGTERM, &action, &g_previous_term);
}

StopOnSignal::~StopOnSignal() {
  if (--g_depth > 0) return;
  sigaction(SIGINT, &g_previous_int, nullptr);
  sigaction(SIGTERM, &g_previous_term, nullptr);
  g_signal = 0;
}

int stop_signal() {
  return g_signal;
}

std::string signal_name(int signal) {
  if (signal == SIGINT) return "SIGINT";
  if (signal == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(signal);
}

}  // namespace distill::train
