#include "core/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"
#include "core/ops.h"

namespace distill {

namespace {
const char* descr_of(DType d) {
  switch (d) {
    case DType::F32:
      return "<f4";
    case DType::F64:
      return "<f8";
    case DType::I32:
      return "<i4";
    case DType::I64:
      return "<i8";
    case DType::U8:
      return "|u1";
    default:
      return nullptr;
  }
}
}  // namespace

void save_npy(const std::string& path, const Tensor& tensor) {
  Tensor t = tensor;
  if (!descr_of(t.dtype())) t = to_dtype(t, DType::F32);
  t = contiguous(to_device(t, Device::cpu()));
  // Python's tuple repr: "()", "(3,)", "(2, 3)".
  std::ostringstream shape;
  shape << "(";
  for (size_t i = 0; i < t.shape().size(); ++i) shape << (i ? ", " : "") << t.shape()[i];
  shape << (t.shape().size() == 1 ? ",)" : ")");
  std::string header = std::string("{'descr': '") + descr_of(t.dtype()) +
                       "', 'fortran_order': False, 'shape': " + shape.str() + ", }";
  // Pad so the data starts at a multiple of 64 bytes; the header ends with a newline.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  AtomicFileWriter out(path, "save_npy");
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header);
  out.write(t.data_ptr(), t.nbytes());
  out.commit();
}

Tensor load_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DISTILL_CHECK(in.good(), "load_npy: cannot open ", path);
  char magic[10];
  in.read(magic, 10);
  DISTILL_CHECK(in.gcount() == 10 && std::memcmp(magic, "\x93NUMPY", 6) == 0 && magic[6] == 1,
                "load_npy: ", path, " is not a version-1 .npy file");
  const size_t len = static_cast<uint8_t>(magic[8]) | (static_cast<uint8_t>(magic[9]) << 8);
  std::string header(len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(len));
  DISTILL_CHECK(static_cast<size_t>(in.gcount()) == len, "load_npy: ", path, " is truncated");
  DISTILL_CHECK(header.find("'fortran_order': False") != std::string::npos, "load_npy: ", path,
                " is in Fortran order");
  DType dtype = DType::F32;
  bool found = false;
  for (DType d : {DType::F32, DType::F64, DType::I32, DType::I64, DType::U8})
    if (header.find(std::string("'descr': '") + descr_of(d) + "'") != std::string::npos) {
      dtype = d;
      found = true;
    }
  DISTILL_CHECK(found, "load_npy: ", path, ": unsupported dtype in header ", header);
  const size_t a = header.find("'shape': (");
  const size_t b = header.find(')', a);
  DISTILL_CHECK(a != std::string::npos && b != std::string::npos, "load_npy: ", path,
                ": no shape in header");
  Shape shape;
  std::stringstream ss(header.substr(a + 10, b - a - 10));
  for (std::string tok; std::getline(ss, tok, ',');)
    if (tok.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(tok));
  Tensor t = Tensor::empty(shape, TensorOptions(dtype));
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  DISTILL_CHECK(static_cast<size_t>(in.gcount()) == t.nbytes(), "load_npy: ", path,
                " is truncated (", in.gcount(), " of ", t.nbytes(), " data bytes)");
  return t;
}

}  // namespace distill
