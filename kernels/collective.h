// NCCL collectives on CUDA buffers (core/distributed.h is the public API). Each one is enqueued
// on a communication stream that first waits for the compute stream (kernels::cuda::stream()),
// so the gradients it reads are final; the returned event lets the compute stream wait for the
// result in turn. Without NCCL compiled in, nccl_compiled() is false and the rest throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace distill::kernels::cuda {

enum class CollectiveDType { F32, BF16 };

bool nccl_compiled();
// ncclGetUniqueId on the root rank: the bytes every rank needs for nccl_init.
std::vector<uint8_t> nccl_unique_id();
void nccl_init(const std::vector<uint8_t>& unique_id, int world_size, int rank);
void nccl_destroy();  // safe when never initialised
// Sum over ranks in place; returns an event (a cudaEvent_t as void*) recorded after it.
void* nccl_all_reduce_sum_async(void* data, size_t count, CollectiveDType dtype);
// The compute stream waits for `event` (then the event is destroyed).
void nccl_wait(void* event);
// Rank `root`'s `bytes` bytes on every rank, ordered before later work on the compute stream.
void nccl_broadcast(void* data, size_t bytes, int root);

}  // namespace distill::kernels::cuda
