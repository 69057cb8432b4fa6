// The process group of a data-parallel run: one process per GPU (or per CPU rank), started by
// mpirun or srun. Rank, world size and local rank come from MPI; CPU tensors are reduced with
// MPI, CUDA tensors with NCCL (kernels/collective.h) on a communication stream ordered after the
// compute stream, the NCCL communicator bootstrapped by broadcasting its unique id over MPI.
//
// Without a launcher (no OMPI_COMM_WORLD_SIZE / PMI_SIZE / PMIX_RANK / SLURM_NTASKS > 1 in the
// environment) the process is world size 1 and no MPI function is ever called: MPI_Init as a
// singleton can be slow or fail in containers without a network, and the single-process path
// must stay exactly what it was. Every collective below is then a no-op (or a copy).
//
// Collectives must be called by every rank in the same order; the caller guarantees it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace distill::dist {

// Whether this build has MPI (DISTILL_HAS_MPI) and NCCL (DISTILL_HAS_NCCL) compiled in.
bool mpi_compiled();
bool nccl_compiled();

// Reads the launcher environment and, under one, initialises MPI (and picks the GPU of the
// local rank when CUDA is present). Throws a clear error when launched by mpirun/srun with more
// than one process but MPI is not compiled in. Idempotent; `finalize()` ends it.
void init_from_environment();
void finalize();
// The number of processes a launcher says it started (1 without one). Reads only the environment.
int launcher_world_size();

int world_size();
int rank();
int local_rank();
bool is_primary();   // rank 0: the one that writes files and prints progress
bool distributed();  // world_size() > 1

void barrier();
// Prints `message` prefixed with the rank and ends every process of the job (MPI_Abort), so that
// a rank that fails does not leave the others waiting in a collective forever.
[[noreturn]] void abort_all(const std::string& message, int exit_code = 1);

// In place, sum over ranks. CPU: F32, F64 or I64 through MPI; CUDA: F32/BF16 through NCCL.
void all_reduce_sum(Tensor& t);
// In place, rank `root`'s values on every rank.
void broadcast(Tensor& t, int root = 0);

// Host buffers (evaluation counts, flags, cached targets).
void all_reduce_sum(std::vector<int64_t>& values);
void all_reduce_sum(std::vector<double>& values);
int64_t all_reduce_max(int64_t value);
// Every rank's `local` values concatenated in rank order (sizes may differ per rank).
std::vector<float> all_gather(const std::vector<float>& local);
std::vector<int64_t> all_gather(const std::vector<int64_t>& local);
// Rank `root`'s string on every rank.
std::string broadcast_string(const std::string& value, int root = 0);

// A nonblocking all-reduce in flight. wait() returns once the result is in the tensor (CPU) or
// once the compute stream is ordered after it (CUDA). Destroying a Work waits for it.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  // Lets the collective advance without blocking (MPI moves a nonblocking collective only inside
  // MPI calls); true once it is complete.
  virtual bool test() { return true; }
};
// Starts summing `t` (contiguous) over ranks in place; `t` must stay alive until wait().
std::unique_ptr<Work> all_reduce_sum_async(Tensor& t);

}  // namespace distill::dist
