// Without NCCL (a CPU build, or CUDA without libnccl), the NCCL collectives report that they are
// not compiled in; CPU tensors are reduced through MPI instead (core/distributed.cpp).
#if !DISTILL_HAS_NCCL
#include <stdexcept>

#include "kernels/collective.h"

namespace distill::kernels::cuda {

namespace {
[[noreturn]] void unavailable(const char* what) {
  throw std::runtime_error(std::string(what) +
                           ": this build has no NCCL support (CUDA tensors cannot be reduced "
                           "across processes; rebuild with NCCL next to the CUDA toolkit)");
}
}  // namespace

bool nccl_compiled() {
  return false;
}
std::vector<uint8_t> nccl_unique_id() {
  unavailable("nccl_unique_id");
}
void nccl_init(const std::vector<uint8_t>&, int, int) {
  unavailable("nccl_init");
}
void nccl_destroy() {}
void* nccl_all_reduce_sum_async(void*, size_t, CollectiveDType) {
  unavailable("nccl_all_reduce");
}
void nccl_wait(void*) {
  unavailable("nccl_wait");
}
void nccl_broadcast(void*, size_t, int) {
  unavailable("nccl_broadcast");
}

}  // namespace distill::kernels::cuda
#endif  // !DISTILL_HAS_NCCL
