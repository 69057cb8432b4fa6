// Transforms: PIL/torchvision fidelity against the fixture made by
// tools/fixtures/make_transform_fixtures.py, and the augmentation's sampling and determinism.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tar.h"
#include "data/transforms.h"
#include "tests/data/data_test_util.h"

namespace distill::data {
namespace {

const std::string kFixtures = std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/transforms/";

nlohmann::json manifest() {
  std::ifstream in(kFixtures + "manifest.json");
  return nlohmann::json::parse(in);
}

Image load_u8(const nlohmann::json& entry) {
  const std::string path = kFixtures + entry["file"].get<std::string>();
  Image im;
  im.height = entry["height"].get<int>();
  im.width = entry["width"].get<int>();
  im.pixels.resize(static_cast<size_t>(im.height) * im.width * 3);
  gzFile f = gzopen(path.c_str(), "rb");
  EXPECT_NE(f, nullptr) << path;
  const int n = gzread(f, im.pixels.data(), static_cast<unsigned>(im.pixels.size()));
  gzclose(f);
  EXPECT_EQ(n, static_cast<int>(im.pixels.size())) << path;
  return im;
}

// Largest absolute difference in grey levels (and the count of differing values).
int max_abs_diff(const Image& a, const Image& b, int64_t* differing = nullptr) {
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  if (a.pixels.size() != b.pixels.size()) return 256;
  int worst = 0;
  int64_t count = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const int d = std::abs(int(a.pixels[i]) - int(b.pixels[i]));
    worst = std::max(worst, d);
    count += d != 0;
  }
  if (differing) *differing = count;
  return worst;
}

const nlohmann::json* find_case(const nlohmann::json& m, const std::string& name) {
  for (const auto& c : m["cases"])
    if (c["name"] == name) return &c;
  return nullptr;
}

// Resize on identical inputs (PIL's decoded pixels, lossless PNGs, or rocket.jpg, which
// libjpeg-turbo decodes to PIL's pixels): bit-exact expected.
TEST(TransformFidelity, ClipPreprocessMatchesTorchvisionOnIdenticalInputs) {
  const auto m = manifest();
  int checked = 0;
  for (const auto& c : m["cases"]) {
    if (c["kind"] != "clip") continue;
    Image source;
    if (c.contains("pil_source")) {
      source = load_u8(c["pil_source"]);
    } else {
      const std::string shared = testing::shared_data_dir();
      const std::string file = shared + "/" + c["shared_file"].get<std::string>();
      if (shared.empty() || !std::filesystem::exists(file)) continue;  // counted below
      source = decode_image_file(file);
    }
    const Image ours = ClipPreprocess(c["size"].get<int>()).resized_and_cropped(source);
    const Image expected = load_u8(c["expected"]);
    EXPECT_LE(max_abs_diff(ours, expected), 1) << c["name"];
    EXPECT_EQ(max_abs_diff(ours, expected), 0) << c["name"] << ": not bit-exact";
    ++checked;
  }
  EXPECT_GE(checked, 4);  // the CIFAR cases need no shared data
}

TEST(TransformFidelity, ResizedCropMatchesTorchvision) {
  const auto m = manifest();
  for (const auto& c : m["cases"]) {
    if (c["kind"] != "resized_crop") continue;
    const Image source = load_u8((*find_case(m, c["source"].get<std::string>()))["pil_source"]);
    const auto& b = c["box"];
    const Box box{b["left"].get<int>(), b["top"].get<int>(), b["width"].get<int>(),
                  b["height"].get<int>()};
    const int size = c["size"].get<int>();
    EXPECT_EQ(max_abs_diff(resize_bicubic(source, box, size, size), load_u8(c["expected"])), 0)
        << c["name"];
  }
}

// The encoded bytes of a member of a shard under ../shared/data (empty when absent).
std::vector<uint8_t> shard_member(const std::string& shard, const std::string& name) {
  const std::string path = testing::shared_data_dir() + "/" + shard;
  if (testing::shared_data_dir().empty() || !std::filesystem::exists(path)) return {};
  TarReader tar(path);
  TarMember m;
  while (tar.next(m))
    if (m.name == name) return tar.read_data();
  return {};
}

// The whole path from the JPEG bytes: libjpeg-turbo at PIL's settings (islow IDCT, fancy
// upsampling) decodes the CIFAR JPEGs to PIL's pixels, so CLIP preprocessing from the bytes
// matches torchvision. (stb_image, the decoder before, differed by up to 3 grey levels here and
// 4 after preprocessing.)
TEST(TransformFidelity, ClipPreprocessFromJpegBytesMatchesTorchvision) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("cifar10-jpg/test-0000.tar");
  const auto m = manifest();
  int worst_decode = 0, worst_output = 0, checked = 0;
  for (const auto& c : m["cases"]) {
    if (!c.contains("member")) continue;
    const auto jpeg = shard_member(c["shard"].get<std::string>(), c["member"].get<std::string>());
    ASSERT_FALSE(jpeg.empty()) << c["member"];
    const Image pil = load_u8(c["pil_source"]);
    const Image decoded = decode_image(jpeg.data(), jpeg.size(), c["member"].get<std::string>());
    worst_decode = std::max(worst_decode, max_abs_diff(decoded, pil));
    const Image ours = ClipPreprocess(c["size"].get<int>()).resized_and_cropped(decoded);
    worst_output = std::max(worst_output, max_abs_diff(ours, load_u8(c["expected"])));
    ++checked;
  }
  EXPECT_EQ(checked, 4);
  const std::string rocket_file = testing::shared_data_dir() + "/captions-sample/rocket.jpg";
  int worst_big_jpeg = -1;
  if (const auto* rocket = find_case(m, "rocket"); rocket && std::filesystem::exists(rocket_file)) {
    const Image ours = ClipPreprocess((*rocket)["size"].get<int>())
                           .resized_and_cropped(decode_image_file(rocket_file));
    worst_big_jpeg = max_abs_diff(ours, load_u8((*rocket)["expected"]));
  }
  std::printf(
      "[ decode  ] libjpeg-turbo vs PIL JPEG decode: max %d grey levels (CIFAR 32x32); after "
      "CLIP preprocessing at 224: max %d; rocket.jpg downscaled to 64: max %d\n",
      worst_decode, worst_output, worst_big_jpeg);
  EXPECT_LE(worst_decode, 1);  // the project's bound
  EXPECT_LE(worst_output, 1);
  EXPECT_LE(worst_big_jpeg, 1);
  EXPECT_EQ(worst_decode, 0) << "decode not bit-exact";
  EXPECT_EQ(worst_output, 0) << "preprocessing from the JPEG bytes not bit-exact";
}

TEST(Transforms, ResizeKeepsFlatImagesFlatAndIdentityIsACopy) {
  Image flat;
  flat.width = 13;
  flat.height = 7;
  flat.pixels.assign(13 * 7 * 3, 77);
  for (auto [w, h] : {std::pair{40, 21}, {5, 3}, {13, 2}, {1, 1}}) {
    const Image r = resize_bicubic(flat, w, h);
    ASSERT_EQ(r.pixels.size(), static_cast<size_t>(w * h * 3));
    for (uint8_t v : r.pixels) ASSERT_EQ(v, 77);
  }
  const Image noise = testing::random_image(9, 11, 3);
  EXPECT_EQ(resize_bicubic(noise, 11, 9).pixels, noise.pixels);
  // torchvision's size rule: shorter side to 224, the long side truncated.
  const Image landscape = resize_shortest_side(testing::random_image(3, 7, 1), 224);
  EXPECT_EQ(landscape.height, 224);
  EXPECT_EQ(landscape.width, 522);  // int(224 * 7 / 3) = int(522.67)
  // Center crop offsets round half to even, like Python's round().
  const Image wide = testing::random_image(4, 9, 2);
  const Image c = center_crop(wide, 4, 6);  // (9 - 6) / 2 = 1.5 -> 2
  EXPECT_EQ(c.pixels[0], wide.pixels[2 * 3]);
  const Image c2 = center_crop(testing::random_image(4, 7, 2), 4, 6);  // 0.5 -> 0
  EXPECT_EQ(c2.pixels[0], testing::random_image(4, 7, 2).pixels[0]);
}

TEST(Transforms, NormalizationAndFlip) {
  const Image im = testing::random_image(2, 3, 5);
  std::vector<float> out(3 * 2 * 3), flipped(out.size());
  to_normalized_chw(im, out.data());
  to_normalized_chw(im, flipped.data(), kClipMean, kClipStd, true);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 3; ++x) {
        const float v = im.pixels[(y * 3 + x) * 3 + c];
        const float expected = (v / 255.0f - kClipMean[c]) / kClipStd[c];
        EXPECT_FLOAT_EQ(out[(c * 2 + y) * 3 + x], expected);
        EXPECT_FLOAT_EQ(flipped[(c * 2 + y) * 3 + (2 - x)], expected);
      }
  EXPECT_EQ(flip_horizontal(flip_horizontal(im)).pixels, im.pixels);
}

TEST(Transforms, RandomResizedCropSamplingAndFallback) {
  // Boxes lie inside the image with area and ratio in range (up to rounding).
  for (uint64_t id = 0; id < 500; ++id) {
    SampleRng rng(7, 0, id);
    const Box b = random_resized_crop_box(32, 48, 0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0, rng);
    ASSERT_GE(b.x, 0);
    ASSERT_GE(b.y, 0);
    ASSERT_LE(b.x + b.width, 48);
    ASSERT_LE(b.y + b.height, 32);
    const double area = double(b.width) * b.height / (32.0 * 48.0);
    EXPECT_GE(area, 0.08 * 0.7);
  }
  // A scale no box can reach: torchvision's fallback, the whole image cut to the ratio range.
  SampleRng rng(1, 0, 0);
  const Box tall = random_resized_crop_box(100, 20, 5.0, 6.0, 3.0 / 4.0, 4.0 / 3.0, rng);
  EXPECT_EQ(tall.width, 20);
  EXPECT_EQ(tall.height, 27);  // round(20 / (3/4)) = round(26.67)
  EXPECT_EQ(tall.y, (100 - 27) / 2);
  const Box wide = random_resized_crop_box(20, 100, 5.0, 6.0, 3.0 / 4.0, 4.0 / 3.0, rng);
  EXPECT_EQ(wide.height, 20);
  EXPECT_EQ(wide.width, 27);
  const Box square = random_resized_crop_box(30, 30, 5.0, 6.0, 3.0 / 4.0, 4.0 / 3.0, rng);
  EXPECT_EQ(square.width, 30);
  EXPECT_EQ(square.x, 0);
}

TEST(Transforms, AugmentationDependsOnSeedEpochAndSampleOnly) {
  AugmentOptions o;
  o.size = 24;
  o.brightness = o.contrast = o.saturation = 0.4;
  const TrainAugment aug(o);
  const Image im = testing::smooth_image(32, 32, 4);
  std::vector<float> a(3 * 24 * 24), b(a.size()), c(a.size()), d(a.size());
  aug.apply(im, 1, 2, 3, a.data());
  aug.apply(testing::smooth_image(32, 32, 9), 1, 2, 4, d.data());  // other work in between
  aug.apply(im, 1, 2, 3, b.data());
  EXPECT_EQ(a, b);
  aug.apply(im, 1, 3, 3, c.data());
  EXPECT_NE(a, c);  // another epoch
  // Flip frequency near one half.
  int flips = 0;
  for (uint64_t id = 0; id < 400; ++id) {
    SampleRng rng(5, 0, id);
    bool flipped = false;
    TrainAugment(AugmentOptions{}).augment(testing::random_image(4, 4, 1), rng, flipped);
    flips += flipped;
  }
  EXPECT_GT(flips, 150);
  EXPECT_LT(flips, 250);
}

TEST(Transforms, ColourJitterFactorOneIsIdentity) {
  Image im = testing::random_image(5, 6, 8);
  const Image original = im;
  adjust_brightness(im, 1.0);
  adjust_contrast(im, 1.0);
  adjust_saturation(im, 1.0);
  EXPECT_EQ(im.pixels, original.pixels);
  adjust_saturation(im, 0.0);  // grey
  for (size_t p = 0; p < im.pixels.size(); p += 3) {
    EXPECT_EQ(im.pixels[p], im.pixels[p + 1]);
    EXPECT_EQ(im.pixels[p], im.pixels[p + 2]);
  }
  adjust_brightness(im, 0.0);
  for (uint8_t v : im.pixels) EXPECT_EQ(v, 0);
}

}  // namespace
}  // namespace distill::data
