// NumPy .npy files (format 1.0, little-endian, C order): what `--out` of the encode commands
// writes, so embeddings load with numpy.load.
#pragma once

#include <string>

#include "core/tensor.h"

namespace distill {

// Writes f32, f64, i32, i64 or u8 tensors (others are converted to f32) atomically and durably
// (core/file_io.h): a failed or killed write leaves any previous file.
void save_npy(const std::string& path, const Tensor& t);
// Reads what save_npy writes (and any little-endian C-order f4/f8/i4/i8/u1 array).
Tensor load_npy(const std::string& path);

}  // namespace distill
