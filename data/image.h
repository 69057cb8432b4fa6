// Decoded images: 8-bit RGB, height x width x 3 (HWC), the layout every reader returns and every
// transform consumes. Decoding goes through stb_image; grey and RGBA inputs become RGB (alpha is
// dropped, as PIL's convert("RGB") does).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace distill::data {

struct Image {
  int height = 0;
  int width = 0;
  std::vector<uint8_t> pixels;  // height * width * 3, row-major, channels last

  static constexpr int kChannels = 3;
  bool empty() const { return pixels.empty(); }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * 3; }
};

// Decodes a JPEG, PNG (or any format stb_image knows) held in memory. `what` names the source in
// errors ("train-0000.tar: member 'cat_0001.jpg' at offset 10240"); zero-byte and corrupt inputs
// throw distill::Error.
Image decode_image(const uint8_t* bytes, size_t size, const std::string& what);
Image decode_image_file(const std::string& path);

// Whole-file read; throws naming the file when it cannot be opened or read.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Encoders (stb_image_write) for tests, fixtures and tools that write datasets.
std::vector<uint8_t> encode_png(const Image& image);
std::vector<uint8_t> encode_jpeg(const Image& image, int quality = 90);

}  // namespace distill::data
