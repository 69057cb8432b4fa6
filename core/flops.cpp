#include "core/flops.h"

#include <atomic>

namespace distill {

namespace {
std::atomic<bool> g_enabled{false};
std::atomic<double> g_total{0.0};
}  // namespace

FlopCounter::FlopCounter() : start_(g_total.load()), was_enabled_(g_enabled.exchange(true)) {}
FlopCounter::~FlopCounter() {
  g_enabled.store(was_enabled_);
}
double FlopCounter::flops() const {
  return g_total.load() - start_;
}

namespace flops {
bool counting() {
  return g_enabled.load(std::memory_order_relaxed);
}
void add(double count) {
  if (!counting()) return;
  double seen = g_total.load();
  while (!g_total.compare_exchange_weak(seen, seen + count)) {
  }
}
}  // namespace flops

}  // namespace distill
