// Tensor: a cheap, reference-counted handle to a strided view of a Storage, plus the autograd
// metadata (requires_grad, grad, grad_fn). Copying a Tensor copies the handle, not the data.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "kernels/common.h"

namespace distill {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

// Owns one allocation on one device.
class Storage {
 public:
  Storage(size_t nbytes, Device device);
  // Wraps memory owned elsewhere (e.g. a memory-mapped file); `keep_alive` holds the owner.
  Storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> keep_alive);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  std::shared_ptr<void> keep_alive_;  // non-null when the memory is borrowed
};

struct Node;
struct TensorImpl;

struct TensorOptions {
  DType dtype = DType::F32;
  Device device = Device::cpu();
  bool requires_grad = false;

  TensorOptions() = default;
  TensorOptions(DType d) : dtype(d) {}        // NOLINT: allow zeros({2}, DType::F64)
  TensorOptions(Device dev) : device(dev) {}  // NOLINT
  TensorOptions(DType d, Device dev, bool rg = false) : dtype(d), device(dev), requires_grad(rg) {}
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Uninitialised contiguous tensor.
  static Tensor empty(const Shape& shape, TensorOptions opts = {});
  // Copies host data of the given dtype into a new tensor on `device`.
  static Tensor from_host(const void* data, const Shape& shape, DType dtype,
                          Device device = Device::cpu());
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape,
                            Device device = Device::cpu());
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape,
                            Device device = Device::cpu());
  static Tensor from_vector(const std::vector<int64_t>& v, const Shape& shape,
                            Device device = Device::cpu());
  // A view over existing storage.
  static Tensor make_view(std::shared_ptr<Storage> storage, const Shape& shape,
                          const Shape& strides, int64_t offset, DType dtype);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const;
  // Pointer to the first element (offset applied).
  void* data_ptr() const;
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_ptr());
  }
  // Kernel descriptor of this view (throws if dim() > kMaxDims).
  kernels::View view_desc() const;
  std::string describe() const;  // "f32[2, 3] on cpu"

  // Autograd.
  bool requires_grad() const;  // leaf flag or produced by a recorded op
  Tensor& set_requires_grad(bool value);
  bool is_leaf() const;
  Tensor grad() const;
  void set_grad(const Tensor& g);
  void zero_grad();  // drops the accumulated gradient
  const std::shared_ptr<Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<Node> fn);
  // Same storage, no autograd history.
  Tensor detach() const;
  // Runs reverse-mode autodiff from this tensor (a scalar unless `grad` is given).
  void backward(const Tensor& grad = Tensor()) const;

  // Conveniences that forward to the op API (core/ops.h).
  Tensor contiguous() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor clone() const;
  Tensor reshape(const Shape& shape) const;
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;

  // Host read-back (copies and converts): for tests, I/O and printing.
  std::vector<float> to_float_vector() const;
  std::vector<double> to_double_vector() const;
  std::vector<int64_t> to_int_vector() const;
  double item() const;  // single-element tensors only

  // In-place, recorded by no tape: used by optimizers, initialisers and I/O.
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(double value);

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;
  DType dtype = DType::F32;
  // Autograd.
  bool requires_grad = false;  // user flag on leaves
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
};

}  // namespace distill
