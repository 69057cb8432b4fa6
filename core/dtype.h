#pragma once

#include <string>

#include "kernels/common.h"

namespace distill {

using DType = kernels::DType;
using kernels::dtype_size;
using kernels::is_floating;

using kernels::dtype_name;                       // "f32", "bf16", ...
DType dtype_from_name(const std::string& name);  // throws on unknown names

}  // namespace distill
