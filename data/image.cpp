// JPEGs are decoded with libjpeg-turbo at PIL's settings; everything else with stb_image, whose
// implementation lives in this file only.
#include "data/image.h"

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "core/error.h"

// After <cstdio>: libjpeg's headers use FILE and size_t without including their headers.
#include <jerror.h>  // the message codes (JWRN_JPEG_EOF)
#include <jpeglib.h>

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
// stb's PNM header parser overflows a signed int on long numbers (undefined behaviour, found by
// tests/fuzz/fuzz_image); no dataset format here uses PNM.
#define STBI_NO_PNM
// JPEGs are libjpeg-turbo's (is_jpeg). stb's own JPEG decoder would still take inputs that start
// with fill bytes before the SOI marker, and it indexes past its Huffman size table on bad
// counts (found by tests/fuzz/fuzz_image): it is left out.
#define STBI_NO_JPEG
#define STBI_FAILURE_USERMSG
#include <stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace distill::data {

namespace {

// libjpeg reports a fatal error by calling error_exit, which must not return (the default one
// calls exit()). Ours longjmps back to decode_jpeg_into with the message: libjpeg is C, so a C++
// exception must not unwind through it.
struct JpegErrorManager {
  jpeg_error_mgr pub;  // first, so that libjpeg's pointer to it is a pointer to the whole
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

[[noreturn]] void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (level -1) and trace messages are dropped, as PIL does, except running out of data:
// libjpeg would pad the image and go on, PIL raises "image file is truncated"
// (ImageFile.LOAD_TRUNCATED_IMAGES is False by default).
void jpeg_emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    reinterpret_cast<JpegErrorManager*>(cinfo->err)->truncated = true;
    jpeg_error_exit(cinfo);
  }
}

// PIL's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS), for every format: a damaged or
// hostile header can claim 65500 x 65500 pixels in a few bytes, and we would allocate (and clear)
// 12 GB for it (a 40-byte GIF made stb_image ask for gigabytes).
constexpr uint64_t kMaxPixels = 2 * 89478485ull;

// PIL's CMYK to RGB (Convert.c cmyk2rgb) on the values of its "CMYK;I" raw mode: PIL assumes
// Adobe's inverted CMYK for every 4-channel JPEG, so libjpeg's output v is PIL's 255 - v.
void cmyk_row_to_rgb(const uint8_t* cmyk, uint8_t* rgb, int width) {
  for (int x = 0; x < width; ++x, cmyk += 4, rgb += 3) {
    const int nk = cmyk[3];  // PIL's 255 - K
    for (int c = 0; c < 3; ++c) {
      const int t = (255 - cmyk[c]) * nk + 128;  // MULDIV255(C, nk)
      rgb[c] = static_cast<uint8_t>(std::clamp(nk - (((t >> 8) + t) >> 8), 0, 255));
    }
  }
}

// Decodes a JPEG into `out` (RGB) as PIL's Image.open(...).convert("RGB") does: libjpeg's
// defaults, which Pillow's JpegDecode.c keeps (islow integer IDCT, fancy upsampling), RGB output
// (grey replicated into the three channels, as convert("RGB") does), CMYK/YCCK converted by PIL's
// formula. Returns false with the message in `err` on failure. No object with a destructor lives
// in this frame, so the longjmp back to it skips none; `out` and `row4` belong to the caller.
bool decode_jpeg_into(const uint8_t* bytes, size_t size, Image& out, std::vector<uint8_t>& row4,
                      JpegErrorManager& err) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_error_exit;
  err.pub.emit_message = jpeg_emit_message;
  err.truncated = false;
  err.message[0] = '\0';
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (uint64_t{cinfo.image_width} * cinfo.image_height > kMaxPixels) {
    std::snprintf(err.message, sizeof err.message,
                  "%u x %u pixels: over PIL's decompression-bomb limit of %llu pixels",
                  cinfo.image_width, cinfo.image_height,
                  static_cast<unsigned long long>(kMaxPixels));
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  // Other colour spaces than grey, YCbCr, RGB and these two make libjpeg fail (as PIL does).
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const int width = static_cast<int>(cinfo.output_width);
  try {
    out.width = width;
    out.height = static_cast<int>(cinfo.output_height);
    out.pixels.resize(static_cast<size_t>(out.width) * out.height * Image::kChannels);
    if (cmyk) row4.resize(static_cast<size_t>(width) * 4);
  } catch (...) {
    jpeg_destroy_decompress(&cinfo);
    throw;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* rgb = out.pixels.data() + static_cast<size_t>(cinfo.output_scanline) * width * 3;
    JSAMPROW row = cmyk ? row4.data() : rgb;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (cmyk) cmyk_row_to_rgb(row4.data(), rgb, width);
  }
  // Reads on to the EOI marker: PIL reports a file cut anywhere before it as truncated, even when
  // only the marker is missing.
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

bool is_jpeg(const uint8_t* bytes, size_t size) {
  return size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF;
}

}  // namespace

Image decode_image(const uint8_t* bytes, size_t size, const std::string& what) {
  DISTILL_CHECK(size > 0, what, ": empty image (0 bytes)");
  DISTILL_CHECK(size < (1u << 31), what, ": image of ", size, " bytes is too large");
  if (is_jpeg(bytes, size)) {
    Image img;
    std::vector<uint8_t> row4;
    JpegErrorManager err;
    if (!decode_jpeg_into(bytes, size, img, row4, err)) {
      if (err.truncated) fail(what, ": cannot decode JPEG: truncated data (", err.message, ")");
      fail(what, ": cannot decode JPEG (", err.message, ")");
    }
    return img;
  }
  int w = 0, h = 0, channels_in_file = 0;
  // stb_image allocates what the header claims before it reads the pixels: check the size first.
  if (stbi_info_from_memory(bytes, static_cast<int>(size), &w, &h, &channels_in_file) &&
      uint64_t(w) * uint64_t(h) > kMaxPixels)
    fail(what, ": cannot decode image (", w, " x ", h,
         " pixels: over PIL's decompression-bomb limit of ", kMaxPixels, " pixels)");
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
