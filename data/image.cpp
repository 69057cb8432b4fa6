// stb_image's implementation lives in this file only.
#include "data/image.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO  // every input arrives as bytes (files, tar members, CIFAR records)
#define STBI_FAILURE_USERMSG
#include <stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace distill::data {

Image decode_image(const uint8_t* bytes, size_t size, const std::string& what) {
  DISTILL_CHECK(size > 0, what, ": empty image (0 bytes)");
  DISTILL_CHECK(size < (1u << 31), what, ": image of ", size, " bytes is too large");
  int w = 0, h = 0, channels_in_file = 0;
  // Ask for 3 channels: stb replicates grey and drops alpha.
  stbi_uc* px = stbi_load_from_memory(bytes, static_cast<int>(size), &w, &h, &channels_in_file,
                                      Image::kChannels);
  if (!px) fail(what, ": cannot decode image (", stbi_failure_reason(), ")");
  Image img;
  img.height = h;
  img.width = w;
  img.pixels.assign(px, px + static_cast<size_t>(w) * h * Image::kChannels);
  stbi_image_free(px);
  return img;
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
  const bool error = std::ferror(f) != 0;
  std::fclose(f);
  DISTILL_CHECK(!error, path, ": read error");
  return out;
}

Image decode_image_file(const std::string& path) {
  const auto bytes = read_file_bytes(path);
  return decode_image(bytes.data(), bytes.size(), path);
}

namespace {
void append_to_vector(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}
}  // namespace

std::vector<uint8_t> encode_png(const Image& image) {
  std::vector<uint8_t> out;
  const int ok =
      stbi_write_png_to_func(append_to_vector, &out, image.width, image.height, Image::kChannels,
                             image.pixels.data(), image.width * Image::kChannels);
  DISTILL_CHECK(ok, "encode_png: cannot encode a ", image.width, "x", image.height, " image");
  return out;
}

std::vector<uint8_t> encode_jpeg(const Image& image, int quality) {
  std::vector<uint8_t> out;
  const int ok = stbi_write_jpg_to_func(append_to_vector, &out, image.width, image.height,
                                        Image::kChannels, image.pixels.data(), quality);
  DISTILL_CHECK(ok, "encode_jpeg: cannot encode a ", image.width, "x", image.height, " image");
  return out;
}

}  // namespace distill::data
