// safetensors I/O (https://github.com/huggingface/safetensors): the checkpoint format used
// everywhere in the engine.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON header
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data buffer; offsets are relative to the start of the buffer.
//
// The reader memory-maps the file and validates the whole header up front, so a truncated or
// corrupted file fails with a distill::Error naming the file (and tensor) instead of crashing.
// The writer replaces its target atomically (temp file, fsync, rename, fsync of the directory).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace distill {

struct SafetensorsTensorInfo {
  DType dtype = DType::F32;  // engine dtype the tensor loads as
  std::string file_dtype;    // dtype string in the header ("F32", "BOOL", ...)
  Shape shape;
  uint64_t begin = 0;  // byte range [begin, end) relative to the data buffer
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Opens, maps and validates `path`; throws distill::Error naming the file on any problem.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  // Tensor names in header order.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return infos_.count(name) != 0; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Throws when the file has no tensor `name`.
  const SafetensorsTensorInfo& info(const std::string& name) const;

  // A CPU tensor with the file's data. Zero-copy (a view of the mapping, which stays alive as long
  // as the tensor does) when the data is aligned to its element size, otherwise a copy. Writing to
  // a zero-copy tensor is allowed: the mapping is private, so the file never changes. Tensors
  // returned by several calls for the same name share that memory; clone() for a private copy.
  Tensor tensor(const std::string& name) const;
  // Every tensor, in header order.
  std::vector<std::pair<std::string, Tensor>> load_all() const;

 private:
  struct Mapping;

  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  uint64_t data_start_ = 0;  // file offset of the data buffer (8 + header length)
  std::vector<std::string> names_;
  std::unordered_map<std::string, SafetensorsTensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (in the given order; CUDA tensors are copied to the host, views made
// contiguous) and `metadata` to `path`. The write is atomic: the data goes to a temporary file
// next to `path` that is fsynced and renamed over it, so on any failure the previous file (if
// any) is left untouched and the temporary file is removed. Throws distill::Error naming the
// path and the system error.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace distill
