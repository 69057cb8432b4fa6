#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <system_error>
#include <unordered_set>

#include "core/autograd.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/ops.h"

namespace distill {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts would need byte swapping");

namespace {

using Json = nlohmann::ordered_json;  // keeps the header's tensor order

// The Python library refuses larger headers too; a bigger length means a corrupted file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

struct DTypeName {
  const char* name;
  DType dtype;
};
// File dtype strings the engine loads. BOOL is stored one byte per value, so it loads as U8.
constexpr DTypeName kFileDTypes[] = {
    {"F32", DType::F32}, {"F64", DType::F64}, {"BF16", DType::BF16}, {"F16", DType::F16},
    {"I32", DType::I32}, {"I64", DType::I64}, {"U8", DType::U8},     {"BOOL", DType::U8},
};

bool dtype_from_file_name(const std::string& name, DType* out) {
  for (const auto& entry : kFileDTypes) {
    if (name == entry.name) {
      *out = entry.dtype;
      return true;
    }
  }
  return false;
}

const char* file_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F64:
      return "F64";
    case DType::BF16:
      return "BF16";
    case DType::F16:
      return "F16";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
    case DType::U8:
      return "U8";
  }
  fail("safetensors: dtype ", static_cast<int>(dtype), " has no safetensors name");
}

std::string supported_dtype_list() {
  std::string out;
  for (const auto& entry : kFileDTypes) {
    if (!out.empty()) out += ", ";
    out += entry.name;
  }
  return out;
}

// Parses and checks one header entry; `where` names the file and tensor for error messages.
SafetensorsTensorInfo parse_tensor_entry(const std::string& where, const Json& entry,
                                         uint64_t buffer_bytes) {
  DISTILL_CHECK(entry.is_object(), where, ": entry must be an object, got ", entry.type_name());
  const auto dtype_it = entry.find("dtype");
  const auto shape_it = entry.find("shape");
  const auto offsets_it = entry.find("data_offsets");
  DISTILL_CHECK(dtype_it != entry.end(), where, ": missing field \"dtype\"");
  DISTILL_CHECK(shape_it != entry.end(), where, ": missing field \"shape\"");
  DISTILL_CHECK(offsets_it != entry.end(), where, ": missing field \"data_offsets\"");

  SafetensorsTensorInfo info;
  DISTILL_CHECK(dtype_it->is_string(), where, ": \"dtype\" must be a string, got ",
                dtype_it->type_name());
  info.file_dtype = dtype_it->get<std::string>();
  DISTILL_CHECK(dtype_from_file_name(info.file_dtype, &info.dtype), where, ": unsupported dtype \"",
                info.file_dtype, "\" (supported: ", supported_dtype_list(), ")");

  DISTILL_CHECK(shape_it->is_array(), where, ": \"shape\" must be an array, got ",
                shape_it->type_name());
  uint64_t numel = 1;
  for (const Json& dim : *shape_it) {
    DISTILL_CHECK(dim.is_number_integer(), where, ": \"shape\" must hold integers, got ",
                  shape_it->dump());
    if (dim.is_number_unsigned()) {
      const uint64_t value = dim.get<uint64_t>();
      DISTILL_CHECK(value <= static_cast<uint64_t>(INT64_MAX), where, ": dimension ", value,
                    " is too large");
      info.shape.push_back(static_cast<int64_t>(value));
    } else {
      const int64_t value = dim.get<int64_t>();
      DISTILL_CHECK(value >= 0, where, ": negative dimension in shape ", shape_it->dump());
      info.shape.push_back(value);
    }
    DISTILL_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(info.shape.back()), &numel),
                  where, ": shape ", shape_it->dump(), " has too many elements");
  }
  uint64_t expected_bytes = 0;
  DISTILL_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(info.dtype)),
                                        &expected_bytes),
                where, ": shape ", shape_it->dump(), " has too many elements");

  const Json& offsets = *offsets_it;
  DISTILL_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                    offsets[1].is_number_unsigned(),
                where, ": \"data_offsets\" must be two non-negative integers [begin, end], got ",
                offsets.dump());
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  DISTILL_CHECK(info.begin <= info.end, where, ": data_offsets [", info.begin, ", ", info.end,
                "] end before they begin");
  DISTILL_CHECK(info.end <= buffer_bytes, where, ": data_offsets [", info.begin, ", ", info.end,
                "] run past the end of the ", buffer_bytes,
                "-byte data buffer (truncated or corrupted file)");
  DISTILL_CHECK(info.end - info.begin == expected_bytes, where, ": data_offsets [", info.begin,
                ", ", info.end, "] span ", info.end - info.begin, " bytes but ", info.file_dtype,
                shape_str(info.shape), " needs ", expected_bytes);
  return info;
}

}  // namespace

// ---- reader

struct SafetensorsFile::Mapping {
  void* address = nullptr;
  size_t length = 0;
  Mapping(void* a, size_t n) : address(a), length(n) {}
  ~Mapping() { ::munmap(address, length); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
};

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const std::string where = "safetensors: '" + path + "'";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(where, ": cannot open: ", errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(where, ": cannot stat: ", errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(where, ": not a regular file");
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < 8) {
    ::close(fd);
    fail(where, ": file is ", file_bytes,
         " bytes, too short for the 8-byte header length (empty, truncated or not safetensors)");
  }
  // Private and writable: tensors that alias the mapping may be modified in place (copy-on-write)
  // without touching the file or faulting; the fd is read-only.
  void* address = ::mmap(nullptr, file_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (address == MAP_FAILED) fail(where, ": mmap failed: ", errno_text(map_errno));
  mapping_ = std::make_shared<Mapping>(address, file_bytes);
  const auto* bytes = static_cast<const unsigned char*>(address);

  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | bytes[i];
  DISTILL_CHECK(header_bytes <= file_bytes - 8, where, ": header length ", header_bytes,
                " runs past the end of the file (", file_bytes,
                " bytes; truncated or not safetensors)");
  DISTILL_CHECK(header_bytes <= kMaxHeaderBytes, where, ": header length ", header_bytes,
                " exceeds the limit of ", kMaxHeaderBytes, " bytes (corrupted file?)");
  data_start_ = 8 + header_bytes;
  const uint64_t buffer_bytes = file_bytes - data_start_;

  // JSON objects may repeat a key and the parser keeps the last one; a repeated tensor name
  // (or field) is a corrupted header, so track the keys of every open object.
  std::vector<std::unordered_set<std::string>> open_objects;
  std::string duplicate_key;
  const Json::parser_callback_t track_duplicates = [&](int /*depth*/, Json::parse_event_t event,
                                                       Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == Json::parse_event_t::key && !open_objects.empty() && parsed.is_string()) {
      if (!open_objects.back().insert(parsed.get<std::string>()).second && duplicate_key.empty())
        duplicate_key = parsed.get<std::string>();
    }
    return true;
  };
  Json header;
  const char* header_text = reinterpret_cast<const char*>(bytes + 8);
  try {
    header = Json::parse(header_text, header_text + header_bytes, track_duplicates);
  } catch (const Json::exception& e) {
    fail(where, ": header is not valid JSON (", e.what(), ")");
  }
  DISTILL_CHECK(header.is_object(), where, ": header must be a JSON object, got ",
                header.type_name());
  DISTILL_CHECK(duplicate_key.empty(), where, ": header repeats the key \"", duplicate_key, "\"");

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (value.is_null()) continue;
      DISTILL_CHECK(value.is_object(), where, ": __metadata__ must be an object, got ",
                    value.type_name());
      for (const auto& [meta_key, meta_value] : value.items()) {
        DISTILL_CHECK(meta_value.is_string(), where, ": __metadata__ value of \"", meta_key,
                      "\" must be a string, got ", meta_value.type_name());
        metadata_[meta_key] = meta_value.get<std::string>();
      }
      continue;
    }
    infos_[key] = parse_tensor_entry(where + ": tensor '" + key + "'", value, buffer_bytes);
    names_.push_back(key);
  }

  // Tensors must not share bytes (empty tensors occupy none).
  std::vector<const std::string*> by_offset;
  for (const auto& name : names_) {
    if (infos_[name].end > infos_[name].begin) by_offset.push_back(&name);
  }
  std::sort(by_offset.begin(), by_offset.end(), [&](const std::string* a, const std::string* b) {
    return infos_[*a].begin < infos_[*b].begin;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto& previous = infos_[*by_offset[i - 1]];
    const auto& current = infos_[*by_offset[i]];
    DISTILL_CHECK(current.begin >= previous.end, where, ": tensors '", *by_offset[i - 1], "' [",
                  previous.begin, ", ", previous.end, ") and '", *by_offset[i], "' [",
                  current.begin, ", ", current.end, ") overlap");
  }
}

const SafetensorsTensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = infos_.find(name);
  DISTILL_CHECK(it != infos_.end(), "safetensors: '", path_, "' has no tensor named '", name,
                "' (it holds ", names_.size(), " tensors)");
  return it->second;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsTensorInfo& ti = info(name);
  const size_t nbytes = static_cast<size_t>(ti.end - ti.begin);
  if (nbytes == 0) return Tensor::empty(ti.shape, TensorOptions(ti.dtype));
  char* data = static_cast<char*>(mapping_->address) + data_start_ + ti.begin;
  if (reinterpret_cast<uintptr_t>(data) % static_cast<uintptr_t>(dtype_size(ti.dtype)) == 0) {
    // Zero-copy: the storage borrows the mapping and keeps it alive.
    auto storage = std::make_shared<Storage>(data, nbytes, Device::cpu(), mapping_);
    return Tensor::make_view(std::move(storage), ti.shape, contiguous_strides(ti.shape), 0,
                             ti.dtype);
  }
  return Tensor::from_host(data, ti.shape, ti.dtype);
}

std::vector<std::pair<std::string, Tensor>> SafetensorsFile::load_all() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(names_.size());
  for (const auto& name : names_) out.emplace_back(name, tensor(name));
  return out;
}

// ---- writer

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string where = "save_safetensors: '" + path + "'";
  Json header = Json::object();
  if (!metadata.empty()) {
    Json& meta = header["__metadata__"];
    meta = Json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
  }
  uint64_t offset = 0;
  std::unordered_set<std::string> seen_names;
  for (const auto& [name, t] : tensors) {
    DISTILL_CHECK(!name.empty(), where, ": empty tensor name");
    DISTILL_CHECK(name != "__metadata__", where,
                  ": \"__metadata__\" is reserved, not a tensor name");
    DISTILL_CHECK(seen_names.insert(name).second, where, ": duplicate tensor name '", name, "'");
    DISTILL_CHECK(t.defined(), where, ": tensor '", name, "' is undefined");
    Json entry = Json::object();
    entry["dtype"] = file_dtype_name(t.dtype());
    entry["shape"] = t.shape();
    entry["data_offsets"] = Json::array({offset, offset + t.nbytes()});
    header[name] = std::move(entry);
    offset += t.nbytes();
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const Json::exception& e) {
    fail(where, ": tensor names and metadata must be valid UTF-8 (", e.what(), ")");
  }
  // Pad with spaces (valid JSON whitespace) so the data buffer starts 8-byte aligned, as the
  // Python library does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  unsigned char length_field[8];
  for (int i = 0; i < 8; ++i)
    length_field[i] = static_cast<unsigned char>(header_text.size() >> (8 * i));

  // Written to a temporary file renamed over `path` only when complete: a kill or a full disk
  // part-way leaves the previous file.
  AtomicFileWriter out(path, "save_safetensors");
  out.write(length_field, 8);
  out.write(header_text);
  {
    NoGradGuard no_grad;
    for (const auto& [name, t] : tensors) {
      // One tensor at a time on the host, so saving from a GPU needs little host memory.
      const Tensor host = t.to(Device::cpu()).contiguous();
      if (host.nbytes() > 0) out.write(host.data_ptr(), host.nbytes());
    }
  }
  out.commit();
}

}  // namespace distill
