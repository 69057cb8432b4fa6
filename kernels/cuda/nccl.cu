// NCCL collectives (kernels/collective.h): one communicator per process, one communication
// stream, events to order it against the compute stream both ways.
#if DISTILL_HAS_NCCL
#include <nccl.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/collective.h"
#include "kernels/cuda/cuda_utils.cuh"

namespace distill::kernels::cuda {

namespace {

ncclComm_t g_comm = nullptr;
cudaStream_t g_comm_stream = nullptr;

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    throw std::runtime_error(std::string(what) + " failed: " + ncclGetErrorString(r));
}

ncclDataType_t nccl_type(CollectiveDType dtype) {
  return dtype == CollectiveDType::F32 ? ncclFloat32 : ncclBfloat16;
}

ncclComm_t comm() {
  if (!g_comm)
    throw std::runtime_error("NCCL collective called before the communicator was initialised");
  return g_comm;
}

// The communication stream waits for everything launched on the compute stream so far.
void order_after_compute() {
  cudaEvent_t ready = nullptr;
  DISTILL_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  DISTILL_CUDA_CHECK(cudaEventRecord(ready, current_stream()));
  DISTILL_CUDA_CHECK(cudaStreamWaitEvent(g_comm_stream, ready, 0));
  DISTILL_CUDA_CHECK(cudaEventDestroy(ready));
}

}  // namespace

bool nccl_compiled() {
  return true;
}

std::vector<uint8_t> nccl_unique_id() {
  ncclUniqueId id;
  nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  std::vector<uint8_t> out(sizeof id.internal);
  std::memcpy(out.data(), id.internal, out.size());
  return out;
}

void nccl_init(const std::vector<uint8_t>& unique_id, int world_size, int rank) {
  if (g_comm) return;
  ncclUniqueId id;
  if (unique_id.size() != sizeof id.internal)
    throw std::runtime_error("nccl_init: the unique id has " + std::to_string(unique_id.size()) +
                             " bytes, expected " + std::to_string(sizeof id.internal));
  std::memcpy(id.internal, unique_id.data(), unique_id.size());
  nccl_check(ncclCommInitRank(&g_comm, world_size, id, rank), "ncclCommInitRank");
  DISTILL_CUDA_CHECK(cudaStreamCreateWithFlags(&g_comm_stream, cudaStreamNonBlocking));
}

void nccl_destroy() {
  if (g_comm) {
    if (g_comm_stream) (void)cudaStreamSynchronize(g_comm_stream);
    (void)ncclCommDestroy(g_comm);
    g_comm = nullptr;
  }
  if (g_comm_stream) {
    (void)cudaStreamDestroy(g_comm_stream);
    g_comm_stream = nullptr;
  }
}

void* nccl_all_reduce_sum_async(void* data, size_t count, CollectiveDType dtype) {
  ncclComm_t c = comm();
  order_after_compute();
  nccl_check(ncclAllReduce(data, data, count, nccl_type(dtype), ncclSum, c, g_comm_stream),
             "ncclAllReduce");
  cudaEvent_t done = nullptr;
  DISTILL_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  DISTILL_CUDA_CHECK(cudaEventRecord(done, g_comm_stream));
  return done;
}

void nccl_wait(void* event) {
  auto done = static_cast<cudaEvent_t>(event);
  DISTILL_CUDA_CHECK(cudaStreamWaitEvent(current_stream(), done, 0));
  DISTILL_CUDA_CHECK(cudaEventDestroy(done));
}

void nccl_broadcast(void* data, size_t bytes, int root) {
  ncclComm_t c = comm();
  order_after_compute();
  nccl_check(ncclBroadcast(data, data, bytes, ncclUint8, root, c, g_comm_stream), "ncclBroadcast");
  cudaEvent_t done = nullptr;
  DISTILL_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  DISTILL_CUDA_CHECK(cudaEventRecord(done, g_comm_stream));
  nccl_wait(done);
}

}  // namespace distill::kernels::cuda
#endif  // DISTILL_HAS_NCCL
