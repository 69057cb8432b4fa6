#include "core/distributed.h"

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/device.h"
#include "core/error.h"
#include "kernels/collective.h"
#include "kernels/device.h"

#if DISTILL_HAS_MPI
// The C API only: the deprecated C++ bindings do not compile warning-free.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace distill::dist {

namespace {

struct State {
  bool initialised = false;  // init_from_environment ran
  bool mpi = false;          // MPI_Init ran here (world size > 1)
  bool nccl = false;         // the NCCL communicator exists
  int world = 1, rank = 0, local_rank = 0;
};
State g;

int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return (end && *end == '\0' && x > 0 && x < INT_MAX) ? static_cast<int>(x) : 0;
}

#if DISTILL_HAS_MPI
void mpi_check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  fail(what, " failed: ", std::string(text, static_cast<size_t>(length)));
}

int mpi_count(size_t n, const char* what) {
  DISTILL_CHECK(n <= static_cast<size_t>(INT_MAX), what, ": ", n,
                " elements exceed MPI's int count; reduce in smaller pieces");
  return static_cast<int>(n);
}

MPI_Datatype mpi_type(DType dtype, const char* what) {
  switch (dtype) {
    case DType::F32:
      return MPI_FLOAT;
    case DType::F64:
      return MPI_DOUBLE;
    case DType::I64:
      return MPI_INT64_T;
    default:
      fail(what, ": CPU tensors of dtype ", dtype_name(dtype),
           " are not reduced over MPI (f32, f64, i64 are)");
  }
}
#endif

// NCCL is set up on the first CUDA collective: CPU runs never touch it.
void ensure_nccl() {
  if (g.nccl) return;
  DISTILL_CHECK(kernels::cuda::nccl_compiled(),
                "a CUDA tensor must be reduced across processes but this build has no NCCL "
                "(configure with CUDA and NCCL next to the toolkit, or run on the CPU)");
  std::vector<uint8_t> id;
  if (g.rank == 0) id = kernels::cuda::nccl_unique_id();
#if DISTILL_HAS_MPI
  if (g.mpi) {
    id.resize(128);
    mpi_check(MPI_Bcast(id.data(), 128, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast (NCCL id)");
  }
#endif
  kernels::cuda::nccl_init(id, g.world, g.rank);
  g.nccl = true;
}

kernels::cuda::CollectiveDType nccl_dtype(DType dtype, const char* what) {
  if (dtype == DType::F32) return kernels::cuda::CollectiveDType::F32;
  DISTILL_CHECK(dtype == DType::BF16, what, ": CUDA tensors of dtype ", dtype_name(dtype),
                " are not reduced (f32, bf16 are)");
  return kernels::cuda::CollectiveDType::BF16;
}

void check_contiguous(const Tensor& t, const char* what) {
  DISTILL_CHECK(t.defined() && t.is_contiguous(), what, ": needs a defined contiguous tensor, got ",
                t.defined() ? t.describe() : "undefined");
}

// Whether a CUDA tensor goes through NCCL: always when NCCL is compiled in (world size 1 then
// runs the NCCL path for real, which is how a single GPU tests it), else only to fail clearly.
bool use_nccl(const Tensor& t) {
  return t.device().is_cuda() && (g.world > 1 || kernels::cuda::nccl_compiled());
}

}  // namespace

bool mpi_compiled() {
  return DISTILL_HAS_MPI != 0;
}
bool nccl_compiled() {
  return kernels::cuda::nccl_compiled();
}

int launcher_world_size() {
  // OpenMPI, MPICH / Intel MPI (Hydra), MVAPICH, and srun's job step (not SLURM_NTASKS: that is
  // also set for a plain process inside an sbatch allocation).
  for (const char* name :
       {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"})
    if (const int n = env_int(name); n > 0) return n;
  return 1;
}

void init_from_environment() {
  if (g.initialised) return;
  const int launched = launcher_world_size();
  if (launched > 1) {
#if DISTILL_HAS_MPI
    int provided = 0;
    // Only the main thread calls MPI (loader threads never do).
    mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init");
    g.mpi = true;
    MPI_Comm_size(MPI_COMM_WORLD, &g.world);
    MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
    MPI_Comm node;
    mpi_check(
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g.rank, MPI_INFO_NULL, &node),
        "MPI_Comm_split_type");
    MPI_Comm_rank(node, &g.local_rank);
    MPI_Comm_free(&node);
    // Errors come back as codes (and become exceptions) instead of killing the job silently.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
#else
    fail("started by a launcher with ", launched,
         " processes (mpirun/srun) but this build has no MPI support: install an MPI (e.g. "
         "openmpi-bin libopenmpi-dev) and reconfigure with -DDISTILL_MPI=ON, or run one process");
#endif
  }
  g.initialised = true;
  if (cuda_available()) kernels::cuda::set_device(g.local_rank % kernels::cuda::device_count());
}

void finalize() {
  if (g.nccl) kernels::cuda::nccl_destroy();
  g.nccl = false;
#if DISTILL_HAS_MPI
  if (g.mpi) MPI_Finalize();
#endif
  g = State{};
}

int world_size() {
  return g.world;
}
int rank() {
  return g.rank;
}
int local_rank() {
  return g.local_rank;
}
bool is_primary() {
  return g.rank == 0;
}
bool distributed() {
  return g.world > 1;
}

void barrier() {
#if DISTILL_HAS_MPI
  if (g.mpi) mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void abort_all(const std::string& message, int exit_code) {
  std::fprintf(stderr, "[rank %d/%d] %s\n", g.rank, g.world, message.c_str());
  std::fflush(stderr);
#if DISTILL_HAS_MPI
  if (g.mpi) MPI_Abort(MPI_COMM_WORLD, exit_code);
#endif
  std::_Exit(exit_code);
}

void all_reduce_sum(Tensor& t) {
  check_contiguous(t, "all_reduce_sum");
  if (use_nccl(t)) {
    ensure_nccl();
    kernels::cuda::nccl_wait(kernels::cuda::nccl_all_reduce_sum_async(
        t.data_ptr(), static_cast<size_t>(t.numel()), nccl_dtype(t.dtype(), "all_reduce_sum")));
    return;
  }
  if (!g.mpi) return;
#if DISTILL_HAS_MPI
  DISTILL_CHECK(t.device().is_cpu(), "all_reduce_sum: ", t.describe());
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(),
                          mpi_count(static_cast<size_t>(t.numel()), "all_reduce_sum"),
                          mpi_type(t.dtype(), "all_reduce_sum"), MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce");
#endif
}

void broadcast(Tensor& t, int root) {
  check_contiguous(t, "broadcast");
  if (!distributed()) return;
  if (t.device().is_cuda()) {
    ensure_nccl();
    kernels::cuda::nccl_broadcast(t.data_ptr(), t.nbytes(), root);
    return;
  }
#if DISTILL_HAS_MPI
  mpi_check(
      MPI_Bcast(t.data_ptr(), mpi_count(t.nbytes(), "broadcast"), MPI_BYTE, root, MPI_COMM_WORLD),
      "MPI_Bcast");
#endif
}

void all_reduce_sum(std::vector<int64_t>& values) {
  if (!g.mpi) return;
#if DISTILL_HAS_MPI
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, values.data(), mpi_count(values.size(), "all_reduce_sum"),
                          MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce");
#endif
}

void all_reduce_sum(std::vector<double>& values) {
  if (!g.mpi) return;
#if DISTILL_HAS_MPI
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, values.data(), mpi_count(values.size(), "all_reduce_sum"),
                          MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce");
#endif
}

int64_t all_reduce_max(int64_t value) {
#if DISTILL_HAS_MPI
  if (g.mpi)
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD),
              "MPI_Allreduce");
#endif
  return value;
}

namespace {
template <typename T>
std::vector<T> gather_all(const std::vector<T>& local) {
  if (!g.mpi) return local;
  std::vector<T> out;
#if DISTILL_HAS_MPI
  const int bytes = mpi_count(local.size() * sizeof(T), "all_gather");
  std::vector<int> counts(static_cast<size_t>(g.world)), offsets(static_cast<size_t>(g.world));
  mpi_check(MPI_Allgather(&bytes, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD),
            "MPI_Allgather");
  size_t total = 0;
  for (int r = 0; r < g.world; ++r) {
    offsets[static_cast<size_t>(r)] = mpi_count(total, "all_gather");
    total += static_cast<size_t>(counts[static_cast<size_t>(r)]);
  }
  mpi_count(total, "all_gather");
  out.resize(total / sizeof(T));
  mpi_check(MPI_Allgatherv(local.data(), bytes, MPI_BYTE, out.data(), counts.data(), offsets.data(),
                           MPI_BYTE, MPI_COMM_WORLD),
            "MPI_Allgatherv");
#endif
  return out;
}
}  // namespace

std::vector<float> all_gather(const std::vector<float>& local) {
  return gather_all(local);
}
std::vector<int64_t> all_gather(const std::vector<int64_t>& local) {
  return gather_all(local);
}

std::string broadcast_string(const std::string& value, int root) {
  if (!g.mpi) return value;
  std::string out = value;
#if DISTILL_HAS_MPI
  int64_t size = static_cast<int64_t>(value.size());
  mpi_check(MPI_Bcast(&size, 1, MPI_INT64_T, root, MPI_COMM_WORLD), "MPI_Bcast");
  out.resize(static_cast<size_t>(size));
  mpi_check(MPI_Bcast(out.data(), mpi_count(out.size(), "broadcast_string"), MPI_CHAR, root,
                      MPI_COMM_WORLD),
            "MPI_Bcast");
#endif
  return out;
}

namespace {

class DoneWork : public Work {
 public:
  void wait() override {}
};

class NcclWork : public Work {
 public:
  explicit NcclWork(void* event) : event_(event) {}
  ~NcclWork() override {
    if (event_) try {
        wait();
      } catch (...) {
      }
  }
  void wait() override {
    if (!event_) return;
    void* e = event_;
    event_ = nullptr;
    kernels::cuda::nccl_wait(e);
  }

 private:
  void* event_;
};

#if DISTILL_HAS_MPI
class MpiWork : public Work {
 public:
  MpiWork() = default;
  ~MpiWork() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  void wait() override {
    if (request_ != MPI_REQUEST_NULL)
      mpi_check(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Wait (all-reduce)");
  }
  bool test() override {
    int done = 1;
    if (request_ != MPI_REQUEST_NULL)
      mpi_check(MPI_Test(&request_, &done, MPI_STATUS_IGNORE), "MPI_Test (all-reduce)");
    return done != 0;
  }
  MPI_Request request_ = MPI_REQUEST_NULL;
};
#endif

}  // namespace

std::unique_ptr<Work> all_reduce_sum_async(Tensor& t) {
  check_contiguous(t, "all_reduce_sum_async");
  if (use_nccl(t)) {
    ensure_nccl();
    return std::make_unique<NcclWork>(
        kernels::cuda::nccl_all_reduce_sum_async(t.data_ptr(), static_cast<size_t>(t.numel()),
                                                 nccl_dtype(t.dtype(), "all_reduce_sum_async")));
  }
  if (!g.mpi) return std::make_unique<DoneWork>();
#if DISTILL_HAS_MPI
  DISTILL_CHECK(t.device().is_cpu(), "all_reduce_sum_async: ", t.describe());
  auto work = std::make_unique<MpiWork>();
  mpi_check(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(),
                           mpi_count(static_cast<size_t>(t.numel()), "all_reduce_sum_async"),
                           mpi_type(t.dtype(), "all_reduce_sum_async"), MPI_SUM, MPI_COMM_WORLD,
                           &work->request_),
            "MPI_Iallreduce");
  return work;
#else
  return std::make_unique<DoneWork>();
#endif
}

}  // namespace distill::dist
