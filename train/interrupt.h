// SIGINT / SIGTERM during training: instead of dying mid-step, the run finishes the step, writes a
// checkpoint, and stops with a message saying how to resume. While a StopOnSignal is alive the
// first SIGINT/SIGTERM only sets a flag that the training loop polls between steps; the handler
// then restores the default action, so a second Ctrl-C kills the process at once.
#pragma once

#include <string>

#include "core/error.h"

namespace distill::train {

class StopOnSignal {
 public:
  StopOnSignal();   // installs the handlers (nests: the outermost restores the previous ones)
  ~StopOnSignal();  // restores them and clears a pending request
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;
};

// The signal number received since the StopOnSignal was installed, or 0.
int stop_signal();
// "SIGINT", "SIGTERM" or "signal N".
std::string signal_name(int signal);

// Thrown by the training loop after it has saved its checkpoint; `distill run` prints the message
// and exits with 128 + the signal number, as a shell expects of a process stopped by a signal.
class Interrupted : public Error {
 public:
  Interrupted(int signal, const std::string& message) : Error(message), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

}  // namespace distill::train
