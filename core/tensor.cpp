#include "core/tensor.h"

#include <cstring>
#include <sstream>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "kernels/device.h"

namespace distill {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

// ---- Storage
Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cpu()) {
    data_ = cpu_alloc(nbytes);
  } else {
    data_ = cuda_alloc(nbytes, device.index);
  }
}

Storage::Storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> keep_alive)
    : data_(data), nbytes_(nbytes), device_(device), keep_alive_(std::move(keep_alive)) {}

Storage::~Storage() {
  if (keep_alive_) return;  // borrowed memory: the owner frees it
  if (device_.is_cpu()) {
    cpu_free(data_, nbytes_);
  } else {
    cuda_free(data_, nbytes_, device_.index);
  }
}

// ---- Tensor construction
Tensor Tensor::empty(const Shape& shape, TensorOptions opts) {
  for (int64_t d : shape)
    DISTILL_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(shape));
  if (opts.device.is_cuda()) {
    DISTILL_CHECK(cuda_compiled(), "empty: cannot allocate on ", opts.device.str(),
                  ": this build has no CUDA support");
    DISTILL_CHECK(opts.device.index < cuda_device_count(), "empty: cannot allocate on ",
                  opts.device.str(), ": ", cuda_device_count(), " GPU(s) available");
  }
  auto impl = std::make_shared<TensorImpl>();
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(opts.dtype);
  impl->storage = std::make_shared<Storage>(nbytes, opts.device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = opts.dtype;
  impl->requires_grad = opts.requires_grad;
  return Tensor(std::move(impl));
}

Tensor Tensor::from_host(const void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, TensorOptions(dtype, device));
  if (t.nbytes() == 0) return t;
  if (device.is_cpu()) {
    std::memcpy(t.data_ptr(), data, t.nbytes());
  } else {
    kernels::cuda::memcpy_h2d(t.data_ptr(), data, t.nbytes());
  }
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape, Device device) {
  DISTILL_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "from_vector: ", v.size(),
                " values do not fill shape ", shape_str(shape));
  return from_host(v.data(), shape, DType::F32, device);
}
Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& shape, Device device) {
  DISTILL_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "from_vector: ", v.size(),
                " values do not fill shape ", shape_str(shape));
  return from_host(v.data(), shape, DType::F64, device);
}
Tensor Tensor::from_vector(const std::vector<int64_t>& v, const Shape& shape, Device device) {
  DISTILL_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "from_vector: ", v.size(),
                " values do not fill shape ", shape_str(shape));
  return from_host(v.data(), shape, DType::I64, device);
}

Tensor Tensor::make_view(std::shared_ptr<Storage> storage, const Shape& shape, const Shape& strides,
                         int64_t offset, DType dtype) {
  DISTILL_CHECK(shape.size() == strides.size(), "make_view: shape ", shape_str(shape),
                " and strides ", shape_str(strides), " differ in rank");
  // Bounds: the furthest element must lie inside the storage.
  int64_t last = offset;
  bool empty_view = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) empty_view = true;
    DISTILL_CHECK(strides[i] >= 0, "make_view: negative stride in ", shape_str(strides));
    last += (shape[i] - 1) * strides[i];
  }
  if (!empty_view) {
    DISTILL_CHECK(
        offset >= 0 && static_cast<size_t>((last + 1) * dtype_size(dtype)) <= storage->nbytes(),
        "make_view: view ", shape_str(shape), " at offset ", offset, " exceeds its storage of ",
        storage->nbytes(), " bytes");
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

// ---- accessors
namespace {
const TensorImpl& checked(const std::shared_ptr<TensorImpl>& impl) {
  if (!impl) fail("use of an undefined tensor");
  return *impl;
}
}  // namespace

const Shape& Tensor::shape() const {
  return checked(impl_).shape;
}
const Shape& Tensor::strides() const {
  return checked(impl_).strides;
}
int64_t Tensor::offset() const {
  return checked(impl_).offset;
}
int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  const int64_t dd = d < 0 ? d + n : d;
  DISTILL_CHECK(dd >= 0 && dd < n, "size: dim ", d, " out of range for ", describe());
  return shape()[dd];
}
int64_t Tensor::numel() const {
  return shape_numel(shape());
}
DType Tensor::dtype() const {
  return checked(impl_).dtype;
}
Device Tensor::device() const {
  return checked(impl_).storage->device();
}
bool Tensor::is_contiguous() const {
  const auto& s = shape();
  const auto& st = strides();
  int64_t expected = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    if (s[i] != 1 && st[i] != expected) return false;
    expected *= s[i];
  }
  return true;
}
const std::shared_ptr<Storage>& Tensor::storage() const {
  return checked(impl_).storage;
}
void* Tensor::data_ptr() const {
  const auto& i = checked(impl_);
  return static_cast<char*>(i.storage->data()) + i.offset * dtype_size(i.dtype);
}

kernels::View Tensor::view_desc() const {
  kernels::View v;
  DISTILL_CHECK(dim() <= kernels::kMaxDims, "tensor of rank ", dim(),
                " exceeds the kernel limit of ", kernels::kMaxDims, " dims: ", describe());
  v.data = data_ptr();
  v.dtype = dtype();
  v.ndim = static_cast<int>(dim());
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = shape()[i];
    v.strides[i] = strides()[i];
  }
  return v;
}

std::string Tensor::describe() const {
  if (!impl_) return "undefined tensor";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " on " + device().str();
}

// ---- autograd accessors
bool Tensor::requires_grad() const {
  return impl_ && (impl_->requires_grad || impl_->grad_fn != nullptr);
}
Tensor& Tensor::set_requires_grad(bool value) {
  DISTILL_CHECK(impl_, "set_requires_grad on an undefined tensor");
  DISTILL_CHECK(!value || is_floating(dtype()),
                "set_requires_grad: only floating tensors can "
                "require grad, got ",
                describe());
  DISTILL_CHECK(impl_->grad_fn == nullptr,
                "set_requires_grad: only leaf tensors can be flagged; "
                "call detach() first (",
                describe(), ")");
  impl_->requires_grad = value;
  return *this;
}
bool Tensor::is_leaf() const {
  return impl_ && impl_->grad_fn == nullptr;
}
Tensor Tensor::grad() const {
  return checked(impl_).grad;
}
void Tensor::set_grad(const Tensor& g) {
  DISTILL_CHECK(impl_, "set_grad on an undefined tensor");
  impl_->grad = g;
}
void Tensor::zero_grad() {
  if (impl_) impl_->grad = Tensor();
}
const std::shared_ptr<Node>& Tensor::grad_fn() const {
  return checked(impl_).grad_fn;
}
void Tensor::set_grad_fn(std::shared_ptr<Node> fn) {
  DISTILL_CHECK(impl_, "set_grad_fn on an undefined tensor");
  impl_->grad_fn = std::move(fn);
}
Tensor Tensor::detach() const {
  const auto& i = checked(impl_);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = i.storage;
  impl->shape = i.shape;
  impl->strides = i.strides;
  impl->offset = i.offset;
  impl->dtype = i.dtype;
  return Tensor(std::move(impl));
}
void Tensor::backward(const Tensor& grad) const {
  run_backward(*this, grad);
}

// ---- conveniences
Tensor Tensor::contiguous() const {
  return distill::contiguous(*this);
}
Tensor Tensor::to(Device device) const {
  return to_device(*this, device);
}
Tensor Tensor::to(DType t) const {
  return to_dtype(*this, t);
}
Tensor Tensor::clone() const {
  return distill::clone(*this);
}
Tensor Tensor::reshape(const Shape& s) const {
  return distill::reshape(*this, s);
}
Tensor Tensor::permute(const Shape& dims) const {
  return distill::permute(*this, dims);
}
Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  return distill::transpose(*this, d0, d1);
}

namespace {
// Contiguous host copy converted to `t`.
Tensor host_copy(const Tensor& x, DType t) {
  NoGradGuard guard;
  Tensor y = to_dtype(to_device(x, Device::cpu()), t).contiguous();
  return y;
}
}  // namespace

std::vector<float> Tensor::to_float_vector() const {
  Tensor h = host_copy(*this, DType::F32);
  return std::vector<float>(h.data<float>(), h.data<float>() + h.numel());
}
std::vector<double> Tensor::to_double_vector() const {
  Tensor h = host_copy(*this, DType::F64);
  return std::vector<double>(h.data<double>(), h.data<double>() + h.numel());
}
std::vector<int64_t> Tensor::to_int_vector() const {
  Tensor h = host_copy(*this, DType::I64);
  return std::vector<int64_t>(h.data<int64_t>(), h.data<int64_t>() + h.numel());
}
double Tensor::item() const {
  DISTILL_CHECK(numel() == 1, "item: expected a single-element tensor, got ", describe());
  return to_double_vector()[0];
}

}  // namespace distill
