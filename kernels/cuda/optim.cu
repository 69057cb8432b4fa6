// Multi-tensor optimizers on CUDA (kernels/optim.h).
//
// The host flattens the tensor list into a table (one entry per tensor plus the prefix sum of
// its 4096-element chunks), copies it to the device with one transfer and launches one block
// per chunk: a block binary-searches the prefix sums for its tensor, then updates its chunk with
// 16-byte accesses when every buffer of that tensor is suitably aligned (scalar otherwise).
// Arithmetic is fp32 like PyTorch's fused kernels; the CPU reference (kernels/cpu/optim.cpp)
// evaluates the same fp32 formulas in the same order.
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/optim.h"

namespace distill::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // elements per block: 16 per thread
constexpr int kVec = 4;

struct Entry {
  float* param;
  void* grad;
  float* state0;
  float* state1;
  int64_t numel;
  DType grad_dtype;
  bool init_state;
  bool vectorized;  // every buffer aligned for kVec-element accesses
};

// Device copy of the table: entries[count], then chunk_start[count + 1].
struct Table {
  const Entry* entries;
  const int64_t* chunk_start;
  int64_t count;
};

// The host side: builds the entries, uploads them and says how many blocks to launch.
class TableUpload {
 public:
  explicit TableUpload(const std::vector<Entry>& entries) {
    std::vector<int64_t> starts(entries.size() + 1, 0);
    for (size_t i = 0; i < entries.size(); ++i)
      starts[i + 1] = starts[i] + (entries[i].numel + kChunk - 1) / kChunk;
    total_chunks_ = starts.back();
    const size_t entry_bytes = entries.size() * sizeof(Entry);
    const size_t start_offset = (entry_bytes + 15) / 16 * 16;
    const size_t bytes = start_offset + starts.size() * sizeof(int64_t);
    std::vector<unsigned char> host(bytes, 0);
    if (entry_bytes) std::memcpy(host.data(), entries.data(), entry_bytes);
    std::memcpy(host.data() + start_offset, starts.data(), starts.size() * sizeof(int64_t));
    buffer_ = std::make_unique<DeviceScratch>(bytes);
    // From pageable memory the copy is staged before this returns, so `host` may go away.
    DISTILL_CUDA_CHECK(cudaMemcpyAsync(buffer_->as<unsigned char>(), host.data(), bytes,
                                       cudaMemcpyHostToDevice, current_stream()));
    table_.entries = buffer_->as<Entry>();
    table_.chunk_start =
        reinterpret_cast<const int64_t*>(buffer_->as<unsigned char>() + start_offset);
    table_.count = static_cast<int64_t>(entries.size());
    if (total_chunks_ > INT32_MAX)
      throw std::runtime_error("multi-tensor optimizer: too many elements for one launch");
  }
  const Table& table() const { return table_; }
  int64_t blocks() const { return total_chunks_; }

 private:
  std::unique_ptr<DeviceScratch> buffer_;
  Table table_{};
  int64_t total_chunks_ = 0;
};

// The tensor owning chunk `block`: the last t with chunk_start[t] <= block.
__device__ __forceinline__ int64_t find_tensor(const Table& table, int64_t block) {
  int64_t lo = 0, hi = table.count - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (table.chunk_start[mid] <= block) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

struct alignas(16) Float4 {
  float v[4];
};
template <typename T>
struct alignas(sizeof(T) * kVec) Vec4 {
  T v[kVec];
};

__device__ __forceinline__ float load_grad(const void* g, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::BF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(g)[i]);
    case DType::F16:
      return __half2float(static_cast<const __half*>(g)[i]);
    default:
      return static_cast<const float*>(g)[i];
  }
}

__device__ __forceinline__ void load_grad4(const void* g, DType dtype, int64_t i, float (&out)[4]) {
  if (dtype == DType::BF16) {
    const Vec4<__nv_bfloat16> v =
        *reinterpret_cast<const Vec4<__nv_bfloat16>*>(static_cast<const __nv_bfloat16*>(g) + i);
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = __bfloat162float(v.v[k]);
  } else if (dtype == DType::F16) {
    const Vec4<__half> v =
        *reinterpret_cast<const Vec4<__half>*>(static_cast<const __half*>(g) + i);
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = __half2float(v.v[k]);
  } else {
    const Float4 v = *reinterpret_cast<const Float4*>(static_cast<const float*>(g) + i);
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = v.v[k];
  }
}

__device__ __forceinline__ void store_grad(void* g, DType dtype, int64_t i, float v) {
  switch (dtype) {
    case DType::BF16:
      static_cast<__nv_bfloat16*>(g)[i] = __float2bfloat16_rn(v);
      break;
    case DType::F16:
      static_cast<__half*>(g)[i] = __float2half_rn(v);
      break;
    default:
      static_cast<float*>(g)[i] = v;
      break;
  }
}

// Runs op(entry, first_index, count) over this block's chunk: count == kVec for aligned vector
// groups, 1 for scalar elements.
template <typename Op>
__device__ __forceinline__ void for_chunk(const Table& table, Op&& op) {
  const int64_t block = blockIdx.x;
  const int64_t t = find_tensor(table, block);
  const Entry& e = table.entries[t];
  const int64_t begin = (block - table.chunk_start[t]) * kChunk;
  const int64_t end = min(e.numel, begin + kChunk);
  int64_t scalar_begin = begin;
  if (e.vectorized) {
    const int64_t groups = (end - begin) / kVec;
    for (int64_t v = threadIdx.x; v < groups; v += blockDim.x) op(e, begin + v * kVec, kVec);
    scalar_begin = begin + groups * kVec;
  }
  for (int64_t i = scalar_begin + threadIdx.x; i < end; i += blockDim.x) op(e, i, 1);
}

struct AdamWParams {
  float lr_decay;  // 1 - lr * weight_decay
  float one_minus_beta1;
  float beta2, one_minus_beta2;
  float step_size;  // lr / (1 - beta1^step)
  float bias_correction2_sqrt;
  float eps;
};

__device__ __forceinline__ void adamw_update(float& p, float& m, float& v, float g,
                                             const AdamWParams& h) {
  m += h.one_minus_beta1 * (g - m);
  v = h.beta2 * v + h.one_minus_beta2 * g * g;
  const float denom = sqrtf(v) / h.bias_correction2_sqrt + h.eps;
  p = p * h.lr_decay - h.step_size * m / denom;
}

__global__ void __launch_bounds__(kThreads) adamw_kernel(Table table, AdamWParams h) {
  for_chunk(table, [&](const Entry& e, int64_t i, int n) {
    if (n == kVec) {
      float g[4];
      load_grad4(e.grad, e.grad_dtype, i, g);
      Float4 p = *reinterpret_cast<const Float4*>(e.param + i);
      Float4 m = *reinterpret_cast<const Float4*>(e.state0 + i);
      Float4 v = *reinterpret_cast<const Float4*>(e.state1 + i);
#pragma unroll
      for (int k = 0; k < 4; ++k) adamw_update(p.v[k], m.v[k], v.v[k], g[k], h);
      *reinterpret_cast<Float4*>(e.param + i) = p;
      *reinterpret_cast<Float4*>(e.state0 + i) = m;
      *reinterpret_cast<Float4*>(e.state1 + i) = v;
    } else {
      adamw_update(e.param[i], e.state0[i], e.state1[i], load_grad(e.grad, e.grad_dtype, i), h);
    }
  });
}

struct SgdParams {
  float lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov;
};

__device__ __forceinline__ void sgd_update(float& p, float* buf, bool init, float g,
                                           const SgdParams& h) {
  g += h.weight_decay * p;
  if (buf) {
    const float b = init ? g : h.momentum * *buf + h.one_minus_dampening * g;
    *buf = b;
    g = h.nesterov ? g + h.momentum * b : b;
  }
  p -= h.lr * g;
}

__global__ void __launch_bounds__(kThreads) sgd_kernel(Table table, SgdParams h) {
  for_chunk(table, [&](const Entry& e, int64_t i, int n) {
    if (n == kVec) {
      float g[4];
      load_grad4(e.grad, e.grad_dtype, i, g);
      Float4 p = *reinterpret_cast<const Float4*>(e.param + i);
      Float4 b{};
      if (e.state0) b = *reinterpret_cast<const Float4*>(e.state0 + i);
#pragma unroll
      for (int k = 0; k < 4; ++k)
        sgd_update(p.v[k], e.state0 ? &b.v[k] : nullptr, e.init_state, g[k], h);
      *reinterpret_cast<Float4*>(e.param + i) = p;
      if (e.state0) *reinterpret_cast<Float4*>(e.state0 + i) = b;
    } else {
      sgd_update(e.param[i], e.state0 ? e.state0 + i : nullptr, e.init_state,
                 load_grad(e.grad, e.grad_dtype, i), h);
    }
  });
}

// Per-block sum of squares into partials[block]; the last block to finish adds the partials in
// index order (deterministic whichever block is last) and writes the norm.
__global__ void __launch_bounds__(kThreads)
    grad_norm_kernel(Table table, float* __restrict__ partials, unsigned* __restrict__ done,
                     float* __restrict__ total_norm) {
  __shared__ float shared_f[32];
  __shared__ double shared_d[32];
  __shared__ bool is_last;
  float sum_sq = 0.f;
  for_chunk(table, [&](const Entry& e, int64_t i, int n) {
    if (n == kVec) {
      float g[4];
      load_grad4(e.grad, e.grad_dtype, i, g);
#pragma unroll
      for (int k = 0; k < 4; ++k) sum_sq += g[k] * g[k];
    } else {
      const float g = load_grad(e.grad, e.grad_dtype, i);
      sum_sq += g * g;
    }
  });
  sum_sq = block_reduce(sum_sq, SumOp{}, 0.f, shared_f);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = sum_sq;
    __threadfence();  // publish the partial before taking a ticket
    is_last = atomicAdd(done, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;
  double total = 0;
  for (int64_t b = threadIdx.x; b < gridDim.x; b += blockDim.x)
    total += static_cast<double>(__ldcg(partials + b));
  total = block_reduce(total, SumOp{}, 0.0, shared_d);
  if (threadIdx.x == 0) *total_norm = static_cast<float>(sqrt(total));
}

__global__ void __launch_bounds__(kThreads)
    grad_scale_kernel(Table table, const float* __restrict__ total_norm, float max_norm) {
  const float coef = max_norm / (*total_norm + 1e-6f);
  if (coef >= 1.f) return;  // min(coef, 1) == 1: nothing to do (a NaN norm still propagates)
  for_chunk(table, [&](const Entry& e, int64_t i, int n) {
    if (n == kVec && e.grad_dtype == DType::F32) {
      Float4 g = *reinterpret_cast<const Float4*>(static_cast<float*>(e.grad) + i);
#pragma unroll
      for (int k = 0; k < 4; ++k) g.v[k] *= coef;
      *reinterpret_cast<Float4*>(static_cast<float*>(e.grad) + i) = g;
    } else {
      for (int k = 0; k < n; ++k)
        store_grad(e.grad, e.grad_dtype, i + k, load_grad(e.grad, e.grad_dtype, i + k) * coef);
    }
  });
}

bool aligned_all(std::initializer_list<std::pair<const void*, size_t>> buffers) {
  for (const auto& [ptr, bytes] : buffers)
    if (ptr && !is_aligned(ptr, bytes)) return false;
  return true;
}

std::vector<Entry> make_entries(const OptimTensor* tensors, int64_t count) {
  std::vector<Entry> entries;
  entries.reserve(static_cast<size_t>(count));
  for (int64_t t = 0; t < count; ++t) {
    const OptimTensor& o = tensors[t];
    if (o.numel == 0) continue;
    if (o.grad_dtype != DType::F32 && o.grad_dtype != DType::BF16 && o.grad_dtype != DType::F16)
      unsupported_dtype("optimizer step (gradient)", o.grad_dtype);
    Entry e{
        o.param, const_cast<void*>(o.grad), o.state0, o.state1, o.numel, o.grad_dtype, o.init_state,
        false};
    e.vectorized = aligned_all({{o.param, 16},
                                {o.state0, 16},
                                {o.state1, 16},
                                {o.grad, 4 * static_cast<size_t>(dtype_size(o.grad_dtype))}});
    entries.push_back(e);
  }
  return entries;
}

}  // namespace

void adamw_step(const OptimTensor* tensors, int64_t count, const AdamWHyper& hyper) {
  const std::vector<Entry> entries = make_entries(tensors, count);
  if (entries.empty()) return;
  NvtxRange range("adamw_step");
  const double step = static_cast<double>(hyper.step);
  AdamWParams p;
  p.lr_decay = static_cast<float>(1.0 - hyper.lr * hyper.weight_decay);
  p.one_minus_beta1 = static_cast<float>(1.0 - hyper.beta1);
  p.beta2 = static_cast<float>(hyper.beta2);
  p.one_minus_beta2 = static_cast<float>(1.0 - hyper.beta2);
  p.step_size = static_cast<float>(hyper.lr / (1.0 - std::pow(hyper.beta1, step)));
  p.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(hyper.beta2, step)));
  p.eps = static_cast<float>(hyper.eps);
  const TableUpload upload(entries);
  adamw_kernel<<<static_cast<unsigned>(upload.blocks()), kThreads, 0, current_stream()>>>(
      upload.table(), p);
  check_launch("adamw_step");
}

void sgd_step(const OptimTensor* tensors, int64_t count, const SgdHyper& hyper) {
  const std::vector<Entry> entries = make_entries(tensors, count);
  if (entries.empty()) return;
  NvtxRange range("sgd_step");
  SgdParams p;
  p.lr = static_cast<float>(hyper.lr);
  p.momentum = static_cast<float>(hyper.momentum);
  p.one_minus_dampening = static_cast<float>(1.0 - hyper.dampening);
  p.weight_decay = static_cast<float>(hyper.weight_decay);
  p.nesterov = hyper.nesterov;
  const TableUpload upload(entries);
  sgd_kernel<<<static_cast<unsigned>(upload.blocks()), kThreads, 0, current_stream()>>>(
      upload.table(), p);
  check_launch("sgd_step");
}

void clip_grad_norm(const GradTensor* grads, int64_t count, double max_norm, float* total_norm) {
  std::vector<OptimTensor> as_tensors;
  for (int64_t t = 0; t < count; ++t) {
    OptimTensor o;
    o.grad = grads[t].data;
    o.grad_dtype = grads[t].dtype;
    o.numel = grads[t].numel;
    as_tensors.push_back(o);
  }
  const std::vector<Entry> entries = make_entries(as_tensors.data(), count);
  NvtxRange range("clip_grad_norm");
  cudaStream_t stream = current_stream();
  if (entries.empty()) {
    DISTILL_CUDA_CHECK(cudaMemsetAsync(total_norm, 0, sizeof(float), stream));
    return;
  }
  const TableUpload upload(entries);
  const unsigned blocks = static_cast<unsigned>(upload.blocks());
  DeviceScratch scratch(sizeof(float) * blocks + 16);
  float* partials = scratch.as<float>();
  unsigned* done = reinterpret_cast<unsigned*>(scratch.as<unsigned char>() +
                                               ((sizeof(float) * blocks + 15) / 16 * 16));
  DISTILL_CUDA_CHECK(cudaMemsetAsync(done, 0, sizeof(unsigned), stream));
  grad_norm_kernel<<<blocks, kThreads, 0, stream>>>(upload.table(), partials, done, total_norm);
  check_launch("clip_grad_norm (norm)");
  grad_scale_kernel<<<blocks, kThreads, 0, stream>>>(upload.table(), total_norm,
                                                     static_cast<float>(max_norm));
  check_launch("clip_grad_norm (scale)");
}

}  // namespace distill::kernels::cuda
