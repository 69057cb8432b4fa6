// Image decoding: JPEGs through libjpeg-turbo against PIL's decoded pixels (fixture by
// tools/fixtures/make_jpeg_fixtures.py), and truncated or corrupt JPEGs as errors naming the
// source.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/image.h"
#include "tests/data/data_test_util.h"

namespace distill::data {
namespace {

const std::string kFixtures = std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/jpeg/";

std::vector<uint8_t> fixture_bytes(const std::string& name) {
  std::ifstream in(kFixtures + name, std::ios::binary);
  EXPECT_TRUE(in) << kFixtures + name;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

using testing::error_of;

// 4:2:0, 4:2:2, 4:4:4, progressive, restart markers, grey and CMYK, all at odd sizes (partial
// MCUs): the same decoder at the same settings gives PIL's pixels exactly.
TEST(ImageDecode, JpegLayoutsMatchPilExactly) {
  std::ifstream in(kFixtures + "manifest.json");
  const auto manifest = nlohmann::json::parse(in);
  int checked = 0;
  for (const auto& c : manifest["cases"]) {
    const std::string name = c["name"].get<std::string>();
    const Image ours = decode_image_file(kFixtures + c["jpeg"].get<std::string>());
    const auto pil = fixture_bytes(c["rgb"].get<std::string>());
    ASSERT_EQ(ours.width, c["width"].get<int>()) << name;
    ASSERT_EQ(ours.height, c["height"].get<int>()) << name;
    ASSERT_EQ(ours.pixels.size(), pil.size()) << name;
    int worst = 0;
    for (size_t i = 0; i < pil.size(); ++i)
      worst = std::max(worst, std::abs(int(ours.pixels[i]) - int(pil[i])));
    EXPECT_EQ(worst, 0) << name << ": max difference from PIL " << worst << " grey levels";
    ++checked;
  }
  EXPECT_EQ(checked, 7);
}

// PIL raises "image file is truncated" for a JPEG cut anywhere, even just before the EOI marker
// (libjpeg alone would pad the image and warn); trailing bytes after EOI are ignored by both.
TEST(ImageDecode, TruncatedJpegIsAnErrorNamingTheSource) {
  for (const char* file : {"rgb_420.jpg", "rgb_420_progressive.jpg", "cmyk.jpg"}) {
    const auto jpeg = fixture_bytes(file);
    const Image whole = decode_image(jpeg.data(), jpeg.size(), file);
    for (size_t cut = 3; cut < jpeg.size(); ++cut) {  // 3: the JPEG magic, FF D8 FF
      const std::string what = std::string(file) + " cut to " + std::to_string(cut) + " bytes";
      const std::string msg = error_of([&] { decode_image(jpeg.data(), cut, what); });
      ASSERT_FALSE(msg.empty()) << what << ": decoded without an error";
      EXPECT_MESSAGE_HAS(msg, what + ": cannot decode JPEG: truncated data");
    }
    auto padded = jpeg;
    padded.insert(padded.end(), {'j', 'u', 'n', 'k'});
    EXPECT_EQ(decode_image(padded.data(), padded.size(), file).pixels, whole.pixels) << file;
  }
}

TEST(ImageDecode, CorruptJpegIsAnErrorNamingTheSource) {
  auto jpeg = fixture_bytes("rgb_444.jpg");
  // Damage the frame header (SOF0): a zero height.
  const uint8_t sof0[] = {0xFF, 0xC0};
  const auto sof = std::search(jpeg.begin(), jpeg.end(), std::begin(sof0), std::end(sof0));
  ASSERT_NE(sof, jpeg.end());
  auto bad = jpeg;
  bad[sof - jpeg.begin() + 5] = 0;
  bad[sof - jpeg.begin() + 6] = 0;
  std::string msg = error_of([&] { decode_image(bad.data(), bad.size(), "zero-height.jpg"); });
  EXPECT_MESSAGE_HAS(msg, "zero-height.jpg: cannot decode JPEG");
  // A header claiming 60000 x 60000 pixels (libjpeg allows up to 65500 a side): refused before
  // any allocation, as PIL refuses it.
  bad = jpeg;
  for (int k : {5, 7}) {  // height, width: 0xEA60 = 60000
    bad[sof - jpeg.begin() + k] = 0xEA;
    bad[sof - jpeg.begin() + k + 1] = 0x60;
  }
  msg = error_of([&] { decode_image(bad.data(), bad.size(), "bomb.jpg"); });
  EXPECT_MESSAGE_HAS(msg, "bomb.jpg: cannot decode JPEG (60000 x 60000 pixels: over PIL's");
  // The JPEG magic followed by garbage.
  std::vector<uint8_t> garbage = {0xFF, 0xD8, 0xFF, 0x00, 0x13, 0x37, 0x42, 0x42};
  msg = error_of([&] { decode_image(garbage.data(), garbage.size(), "garbage.jpg"); });
  EXPECT_MESSAGE_HAS(msg, "garbage.jpg: cannot decode JPEG");
  // Non-JPEG bytes still go to stb_image, which names the source too.
  garbage = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0};
  msg = error_of([&] { decode_image(garbage.data(), garbage.size(), "broken.png"); });
  EXPECT_MESSAGE_HAS(msg, "broken.png: cannot decode image");
}

TEST(ImageDecode, PngStillDecodesThroughStb) {
  const Image im = testing::random_image(5, 7, 3);
  const auto png = encode_png(im);
  EXPECT_EQ(decode_image(png.data(), png.size(), "random.png").pixels, im.pixels);
}

}  // namespace
}  // namespace distill::data
