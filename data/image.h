// Decoded images: 8-bit RGB, height x width x 3 (HWC), the layout every reader returns and every
// transform consumes. JPEGs are decoded with libjpeg-turbo at PIL's settings (the same pixels as
// PIL), other formats with stb_image; grey, CMYK and RGBA inputs become RGB as PIL's
// convert("RGB") makes them (alpha dropped).
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

// Decodes a JPEG (recognised by its FF D8 FF magic), PNG or any format stb_image knows, held in
// memory. `what` names the source in errors ("train-0000.tar: member 'cat_0001.jpg' at offset
// 10240"); zero-byte, corrupt and truncated inputs throw distill::Error (a JPEG cut short is an
// error, as in PIL, not an image padded with grey).
Image decode_image(const uint8_t* bytes, size_t size, const std::string& what);
Image decode_image_file(const std::string& path);

// Whole-file read; throws naming the file when it cannot be opened or read.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Encoders (stb_image_write) for tests, fixtures and tools that write datasets.
std::vector<uint8_t> encode_png(const Image& image);
std::vector<uint8_t> encode_jpeg(const Image& image, int quality = 90);

}  // namespace distill::data
