// CPU reference for fused attention (see kernels/attention.h for layouts and mask conventions).
//
// Per (batch, head), k is held transposed ([D, Lk]) in a thread-local buffer so that the scores of
// one query row are a sum over d of scaled rows of k^T: the inner loop runs over keys with unit
// stride and vectorises without reassociating any sum. The weighted sum of v is an axpy per key.
// Math runs in float (double for F64 inputs); the softmax normaliser accumulates in double.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {

// Element offset of (b, h, l, 0) in an operand.
inline int64_t row_offset(const AttentionOperand& t, int64_t b, int64_t h, int64_t l) {
  return b * t.stride_b + h * t.stride_h + l * t.stride_l;
}

template <typename T>
void load_row(const AttentionOperand& t, DType dtype, int64_t b, int64_t h, int64_t l, int64_t d,
              T* dst) {
  const int64_t base = row_offset(t, b, h, l);
  for (int64_t i = 0; i < d; ++i) dst[i] = load_as<T>(t.data, base + i, dtype);
}

template <typename T>
void store_row(const AttentionOperand& t, DType dtype, int64_t b, int64_t h, int64_t l, int64_t d,
               const T* src, T factor) {
  const int64_t base = row_offset(t, b, h, l);
  for (int64_t i = 0; i < d; ++i) store_as<T>(t.data, base + i, dtype, src[i] * factor);
}

// The keys of one (batch, head), converted to the compute type once and reused by every query row.
template <typename T>
struct KeyBlock {
  std::vector<T> k_t;         // [D, Lk]: k transposed
  std::vector<T> v_t;         // [D, Lk]: v transposed (backward: dP = dO . v_j as a sum over d)
  std::vector<T> k_rows;      // [Lk, D] (backward: dq += dS_j k_j)
  std::vector<T> v_rows;      // [Lk, D] (forward: out += p_j v_j)
  std::vector<uint8_t> keep;  // [Lk]

  void load(const AttentionArgs& a, int64_t b, int64_t h, bool backward) {
    const int64_t lk = a.kv_len, d = a.head_dim;
    k_t.resize(static_cast<size_t>(d * lk));
    keep.resize(static_cast<size_t>(lk));
    if (backward) {
      v_t.resize(static_cast<size_t>(d * lk));
      k_rows.resize(static_cast<size_t>(lk * d));
    } else {
      v_rows.resize(static_cast<size_t>(lk * d));
    }
    for (int64_t j = 0; j < lk; ++j) {
      const int64_t k_base = row_offset(a.k, b, h, j);
      const int64_t v_base = row_offset(a.v, b, h, j);
      for (int64_t i = 0; i < d; ++i) {
        const T kv = load_as<T>(a.k.data, k_base + i, a.dtype);
        const T vv = load_as<T>(a.v.data, v_base + i, a.dtype);
        k_t[i * lk + j] = kv;
        if (backward) {
          v_t[i * lk + j] = vv;
          k_rows[j * d + i] = kv;
        } else {
          v_rows[j * d + i] = vv;
        }
      }
      keep[j] = a.key_keep == nullptr || a.key_keep[b * a.key_keep_stride_b + j] != 0;
    }
  }
};

// scores[j] = sum_d row[d] * m_t[d, j] for j < count (m_t is [D, lk]).
template <typename T>
void row_times_transposed(const T* row, const T* m_t, int64_t d, int64_t lk, int64_t count,
                          T* scores) {
  std::fill(scores, scores + count, T(0));
  for (int64_t i = 0; i < d; ++i) {
    const T r = row[i];
    const T* col = m_t + i * lk;
    for (int64_t j = 0; j < count; ++j) scores[j] += r * col[j];
  }
}

// Keys a query row may see before the padding mask: all of them, or j <= i when causal.
inline int64_t visible_keys(const AttentionArgs& a, int64_t i) {
  return a.causal ? std::min(a.kv_len, i + 1) : a.kv_len;
}

template <typename T>
void forward_impl(const AttentionArgs& a) {
  const int64_t lq = a.q_len, lk = a.kv_len, d = a.head_dim, heads = a.heads;
  const int64_t bh_count = a.batch * heads;
  // Tasks are (batch*head, chunk of query rows); static scheduling hands each thread consecutive
  // chunks of the same head, so the key block is converted once per thread and head.
  constexpr int64_t kRowsPerTask = 32;
  const int64_t chunks = (lq + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t tasks = bh_count * chunks;
  const bool parallel = tasks > 1 && bh_count * lq * std::max<int64_t>(lk, 1) * d >= kParallelGrain;
  const T scale = static_cast<T>(a.scale);
  const T neg_inf = -std::numeric_limits<T>::infinity();

#pragma omp parallel if (parallel)
  {
    KeyBlock<T> keys;
    std::vector<T> q_row(static_cast<size_t>(d)), out_row(static_cast<size_t>(d));
    std::vector<T> scores(static_cast<size_t>(lk));
    int64_t loaded = -1;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t bh = task / chunks;
      const int64_t b = bh / heads, h = bh % heads;
      if (bh != loaded) {
        keys.load(a, b, h, /*backward=*/false);
        loaded = bh;
      }
      const int64_t row_end = std::min(lq, (task % chunks + 1) * kRowsPerTask);
      for (int64_t i = (task % chunks) * kRowsPerTask; i < row_end; ++i) {
        const int64_t count = visible_keys(a, i);
        load_row(a.q, a.dtype, b, h, i, d, q_row.data());
        row_times_transposed(q_row.data(), keys.k_t.data(), d, lk, count, scores.data());
        T row_max = neg_inf;
        bool any_kept = false;
        for (int64_t j = 0; j < count; ++j) {
          if (!keys.keep[j]) continue;
          any_kept = true;
          scores[j] *= scale;
          // NaN wins so that it propagates to the whole row.
          if (scores[j] > row_max || std::isnan(scores[j])) row_max = scores[j];
          if (std::isnan(row_max)) break;
        }
        const int64_t lse_index = bh * lq + i;
        std::fill(out_row.begin(), out_row.end(), T(0));
        if (!any_kept) {  // every key masked: zeros, log-sum-exp -inf
          store_row(a.out, a.dtype, b, h, i, d, out_row.data(), T(1));
          store_as<T>(a.lse, lse_index, attention_lse_dtype(a.dtype), neg_inf);
          continue;
        }
        double sum = 0;
        for (int64_t j = 0; j < count; ++j) {
          const T p = keys.keep[j] ? std::exp(scores[j] - row_max) : T(0);
          scores[j] = p;
          sum += p;
        }
        for (int64_t j = 0; j < count; ++j) {
          const T p = scores[j];
          if (p == T(0)) continue;  // masked (or underflowed): skip, so masked v never matters
          const T* v_row = keys.v_rows.data() + j * d;
          for (int64_t c = 0; c < d; ++c) out_row[c] += p * v_row[c];
        }
        store_row(a.out, a.dtype, b, h, i, d, out_row.data(), static_cast<T>(1.0 / sum));
        store_as<T>(a.lse, lse_index, attention_lse_dtype(a.dtype),
                    static_cast<T>(row_max + std::log(sum)));
      }
    }
  }
}

template <typename T>
void backward_impl(const AttentionArgs& a) {
  const int64_t lq = a.q_len, lk = a.kv_len, d = a.head_dim, heads = a.heads;
  const int64_t bh_count = a.batch * heads;
  // dk and dv of one head sum over all its query rows: parallel over heads only.
  const bool parallel =
      bh_count > 1 && bh_count * lq * std::max<int64_t>(lk, 1) * d >= kParallelGrain;
  const T scale = static_cast<T>(a.scale);
  const DType lse_dtype = attention_lse_dtype(a.dtype);

#pragma omp parallel if (parallel)
  {
    KeyBlock<T> keys;
    std::vector<T> q_row(static_cast<size_t>(d)), dout_row(static_cast<size_t>(d));
    std::vector<T> out_row(static_cast<size_t>(d)), dq_row(static_cast<size_t>(d));
    std::vector<T> probs(static_cast<size_t>(lk)), dprobs(static_cast<size_t>(lk));
    std::vector<T> dk_acc, dv_acc;
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < bh_count; ++bh) {
      const int64_t b = bh / heads, h = bh % heads;
      keys.load(a, b, h, /*backward=*/true);
      dk_acc.assign(static_cast<size_t>(lk * d), T(0));
      dv_acc.assign(static_cast<size_t>(lk * d), T(0));
      for (int64_t i = 0; i < lq; ++i) {
        const T lse = load_as<T>(a.lse, bh * lq + i, lse_dtype);
        const int64_t count = visible_keys(a, i);
        std::fill(dq_row.begin(), dq_row.end(), T(0));
        if (lse == -std::numeric_limits<T>::infinity() || count == 0) {  // fully masked row
          store_row(a.grad_q, a.dtype, b, h, i, d, dq_row.data(), T(1));
          continue;
        }
        load_row(a.q, a.dtype, b, h, i, d, q_row.data());
        load_row(a.grad_out, a.dtype, b, h, i, d, dout_row.data());
        load_row(a.out, a.dtype, b, h, i, d, out_row.data());
        double dot = 0;  // D_i = rowsum(dO * O) = sum_j P_ij dP_ij
        for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(dout_row[c]) * out_row[c];
        const T row_term = static_cast<T>(dot);
        row_times_transposed(q_row.data(), keys.k_t.data(), d, lk, count, probs.data());
        row_times_transposed(dout_row.data(), keys.v_t.data(), d, lk, count, dprobs.data());
        for (int64_t j = 0; j < count; ++j) {
          const T p = keys.keep[j] ? std::exp(probs[j] * scale - lse) : T(0);
          probs[j] = p;
          dprobs[j] = p * (dprobs[j] - row_term);  // dS
        }
        for (int64_t j = 0; j < count; ++j) {
          const T p = probs[j], ds = dprobs[j];
          if (p == T(0) && ds == T(0)) continue;
          const T* k_row = keys.k_rows.data() + j * d;
          T* dk_row = dk_acc.data() + j * d;
          T* dv_row = dv_acc.data() + j * d;
          for (int64_t c = 0; c < d; ++c) {
            dq_row[c] += ds * k_row[c];
            dk_row[c] += ds * q_row[c];
            dv_row[c] += p * dout_row[c];
          }
        }
        store_row(a.grad_q, a.dtype, b, h, i, d, dq_row.data(), scale);
      }
      for (int64_t j = 0; j < lk; ++j) {
        store_row(a.grad_k, a.dtype, b, h, j, d, dk_acc.data() + j * d, scale);
        store_row(a.grad_v, a.dtype, b, h, j, d, dv_acc.data() + j * d, T(1));
      }
    }
  }
}

}  // namespace

void attention_forward(const AttentionArgs& args) {
  if (args.dtype == DType::F64) {
    forward_impl<double>(args);
  } else {
    forward_impl<float>(args);
  }
}

void attention_backward(const AttentionArgs& args) {
  if (args.dtype == DType::F64) {
    backward_impl<double>(args);
  } else {
    backward_impl<float>(args);
  }
}

}  // namespace distill::kernels::cpu
