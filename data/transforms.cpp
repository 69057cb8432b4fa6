#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "data/sampling.h"
#include "kernels/philox.h"

namespace distill::data {

namespace {

// ---- Pillow's resampling (libImaging/Resample.c), 8 bits per channel.

constexpr int kPrecisionBits = 32 - 8 - 2;  // fixed-point bits of the coefficients

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
constexpr double kBicubicSupport = 2.0;

struct Coefficients {
  int ksize = 0;
  std::vector<int> bounds;  // (first input index, tap count) per output index
  std::vector<int32_t> kk;  // ksize fixed-point taps per output index
};

// precompute_coeffs + normalize_coeffs_8bpc for the input range [0, in_size).
Coefficients precompute(int in_size, int out_size) {
  Coefficients c;
  double filterscale = static_cast<double>(in_size) / out_size;
  const double scale = filterscale;
  if (filterscale < 1.0) filterscale = 1.0;
  const double support = kBicubicSupport * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<size_t>(out_size) * 2);
  c.kk.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(static_cast<size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);  // truncation, as in C
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[static_cast<size_t>(x)] = bicubic_filter((x + xmin - center + 0.5) * ss);
      ww += k[static_cast<size_t>(x)];
    }
    for (int x = 0; x < xmax; ++x) {
      double w = k[static_cast<size_t>(x)];
      if (ww != 0.0) w /= ww;
      c.kk[static_cast<size_t>(xx) * c.ksize + x] =
          w < 0 ? static_cast<int32_t>(-0.5 + w * (1 << kPrecisionBits))
                : static_cast<int32_t>(0.5 + w * (1 << kPrecisionBits));
    }
    c.bounds[2 * static_cast<size_t>(xx)] = xmin;
    c.bounds[2 * static_cast<size_t>(xx) + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  const int32_t s = v >> kPrecisionBits;  // arithmetic shift, as Pillow's lookup index
  return static_cast<uint8_t>(s < 0 ? 0 : (s > 255 ? 255 : s));
}

uint8_t grey_level(const uint8_t* p) {
  // PIL's RGB -> L (ITU-R 601-2 luma in 16-bit fixed point).
  return static_cast<uint8_t>((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
}

// PIL's Image.blend(a, b, alpha) for uint8: a + alpha * (b - a) in float, truncated, clamped.
inline uint8_t blend(float a, float b, float alpha) {
  const float t = a + alpha * (b - a);
  return t <= 0.0f ? 0 : (t >= 255.0f ? 255 : static_cast<uint8_t>(t));
}

// Python's round(): to nearest, ties to even.
int round_half_even(double v) {
  return static_cast<int>(std::nearbyint(v));
}

}  // namespace

Image resize_bicubic(const Image& src, int out_width, int out_height) {
  return resize_bicubic(src, Box{0, 0, src.width, src.height}, out_width, out_height);
}

Image resize_bicubic(const Image& src, const Box& box, int out_width, int out_height) {
  DISTILL_CHECK(out_width > 0 && out_height > 0, "resize_bicubic: bad output size ", out_width, "x",
                out_height);
  DISTILL_CHECK(box.x >= 0 && box.y >= 0 && box.width > 0 && box.height > 0 &&
                    box.x + box.width <= src.width && box.y + box.height <= src.height,
                "resize_bicubic: box (", box.x, ", ", box.y, ", ", box.width, "x", box.height,
                ") outside the ", src.width, "x", src.height, " image");
  const bool need_horizontal = out_width != box.width;
  const bool need_vertical = out_height != box.height;
  if (!need_horizontal && !need_vertical) return crop(src, box);
  const size_t stride = static_cast<size_t>(src.width) * 3;
  const uint8_t* base = src.pixels.data() + static_cast<size_t>(box.y) * stride + box.x * 3;

  const Coefficients vert = precompute(box.height, out_height);
  // Rows of the box the vertical pass reads.
  const int y_first = vert.bounds[0];
  const int y_last = vert.bounds[2 * static_cast<size_t>(out_height) - 2] +
                     vert.bounds[2 * static_cast<size_t>(out_height) - 1];
  const int rows = y_last - y_first;

  // Horizontal pass into a uint8 intermediate of out_width x rows (Pillow rounds here too).
  std::vector<uint8_t> temp;
  int temp_width = box.width;
  if (need_horizontal) {
    const Coefficients horiz = precompute(box.width, out_width);
    temp_width = out_width;
    temp.resize(static_cast<size_t>(rows) * out_width * 3);
    for (int r = 0; r < rows; ++r) {
      const uint8_t* in = base + static_cast<size_t>(y_first + r) * stride;
      uint8_t* out = temp.data() + static_cast<size_t>(r) * out_width * 3;
      for (int xx = 0; xx < out_width; ++xx) {
        const int xmin = horiz.bounds[2 * static_cast<size_t>(xx)];
        const int xmax = horiz.bounds[2 * static_cast<size_t>(xx) + 1];
        const int32_t* k = horiz.kk.data() + static_cast<size_t>(xx) * horiz.ksize;
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        const uint8_t* p = in + static_cast<size_t>(xmin) * 3;
        for (int x = 0; x < xmax; ++x, p += 3) {
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        out[3 * xx] = clip8(s0);
        out[3 * xx + 1] = clip8(s1);
        out[3 * xx + 2] = clip8(s2);
      }
    }
  } else {
    temp.resize(static_cast<size_t>(rows) * box.width * 3);
    for (int r = 0; r < rows; ++r)
      std::copy_n(base + static_cast<size_t>(y_first + r) * stride, box.width * 3,
                  temp.data() + static_cast<size_t>(r) * box.width * 3);
  }

  Image dst;
  dst.width = out_width;
  if (!need_vertical) {
    dst.height = rows;
    dst.pixels = std::move(temp);
    return dst;
  }
  dst.height = out_height;
  dst.pixels.resize(static_cast<size_t>(out_height) * out_width * 3);
  const size_t row_len = static_cast<size_t>(temp_width) * 3;
  std::vector<int32_t> acc(row_len);
  for (int yy = 0; yy < out_height; ++yy) {
    const int ymin = vert.bounds[2 * static_cast<size_t>(yy)] - y_first;
    const int ymax = vert.bounds[2 * static_cast<size_t>(yy) + 1];
    const int32_t* k = vert.kk.data() + static_cast<size_t>(yy) * vert.ksize;
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    // Row by row: the same integer sums as Pillow's per-pixel loop (integer addition is exact).
    for (int y = 0; y < ymax; ++y) {
      const uint8_t* in = temp.data() + static_cast<size_t>(ymin + y) * row_len;
      const int32_t ky = k[y];
      for (size_t i = 0; i < row_len; ++i) acc[i] += in[i] * ky;
    }
    uint8_t* out = dst.pixels.data() + static_cast<size_t>(yy) * row_len;
    for (size_t i = 0; i < row_len; ++i) out[i] = clip8(acc[i]);
  }
  return dst;
}

Image resize_shortest_side(const Image& src, int size) {
  DISTILL_CHECK(size > 0 && src.width > 0 && src.height > 0, "resize_shortest_side: bad size ",
                size, " for a ", src.width, "x", src.height, " image");
  const bool portrait = src.width <= src.height;
  const int shortest = portrait ? src.width : src.height;
  const int longest = portrait ? src.height : src.width;
  // torchvision: new_long = int(size * long / short), Python float division then truncation.
  const int new_long = static_cast<int>(static_cast<double>(size) * longest / shortest);
  return portrait ? resize_bicubic(src, size, new_long) : resize_bicubic(src, new_long, size);
}

Image crop(const Image& src, const Box& box) {
  DISTILL_CHECK(box.x >= 0 && box.y >= 0 && box.width > 0 && box.height > 0 &&
                    box.x + box.width <= src.width && box.y + box.height <= src.height,
                "crop: box (", box.x, ", ", box.y, ", ", box.width, "x", box.height,
                ") outside the ", src.width, "x", src.height, " image");
  Image dst;
  dst.width = box.width;
  dst.height = box.height;
  dst.pixels.resize(static_cast<size_t>(box.width) * box.height * 3);
  for (int y = 0; y < box.height; ++y)
    std::copy_n(src.row(box.y + y) + box.x * 3, box.width * 3,
                dst.pixels.data() + static_cast<size_t>(y) * box.width * 3);
  return dst;
}

Image center_crop(const Image& src, int height, int width) {
  DISTILL_CHECK(height <= src.height && width <= src.width, "center_crop: ", width, "x", height,
                " is larger than the ", src.width, "x", src.height, " image");
  const int top = round_half_even((src.height - height) / 2.0);
  const int left = round_half_even((src.width - width) / 2.0);
  return crop(src, Box{left, top, width, height});
}

Image flip_horizontal(const Image& src) {
  Image dst = src;
  for (int y = 0; y < src.height; ++y) {
    const uint8_t* in = src.row(y);
    uint8_t* out = dst.pixels.data() + static_cast<size_t>(y) * src.width * 3;
    for (int x = 0; x < src.width; ++x) std::copy_n(in + (src.width - 1 - x) * 3, 3, out + x * 3);
  }
  return dst;
}

void to_normalized_chw(const Image& src, float* out, const std::array<float, 3>& mean,
                       const std::array<float, 3>& std, bool flip) {
  // torchvision's arithmetic, float32: (v / 255 - mean) / std, tabulated per channel.
  float table[3][256];
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) table[c][v] = (static_cast<float>(v) / 255.0f - mean[c]) / std[c];
  const size_t plane = static_cast<size_t>(src.width) * src.height;
  for (int y = 0; y < src.height; ++y) {
    const uint8_t* in = src.row(y);
    float* o0 = out + static_cast<size_t>(y) * src.width;
    float* o1 = o0 + plane;
    float* o2 = o1 + plane;
    for (int x = 0; x < src.width; ++x) {
      const uint8_t* p = in + (flip ? src.width - 1 - x : x) * 3;
      o0[x] = table[0][p[0]];
      o1[x] = table[1][p[1]];
      o2[x] = table[2][p[2]];
    }
  }
}

SampleRng::SampleRng(uint64_t seed, uint64_t epoch, uint64_t sample_id)
    : key_(splitmix64(seed ^ splitmix64(epoch + 0x5A17u))), counter_(sample_id << 16) {}

double SampleRng::uniform() {
  const kernels::Philox4 r = kernels::philox4x32_10(counter_++, key_);
  const uint64_t bits = ((static_cast<uint64_t>(r.v[0]) << 32) | r.v[1]) >> 11;
  return static_cast<double>(bits) * (1.0 / 9007199254740992.0);
}

double SampleRng::uniform(double low, double high) {
  return low + (high - low) * uniform();
}

int64_t SampleRng::randint(int64_t low, int64_t high) {
  const auto n = static_cast<double>(high - low);
  return std::min(high - 1, low + static_cast<int64_t>(uniform() * n));
}

Box random_resized_crop_box(int height, int width, double scale_min, double scale_max,
                            double ratio_min, double ratio_max, SampleRng& rng) {
  const double area = static_cast<double>(height) * width;
  const double log_min = std::log(ratio_min), log_max = std::log(ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(scale_min, scale_max);
    const double aspect = std::exp(rng.uniform(log_min, log_max));
    const int w = round_half_even(std::sqrt(target_area * aspect));
    const int h = round_half_even(std::sqrt(target_area / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int top = static_cast<int>(rng.randint(0, height - h + 1));
      const int left = static_cast<int>(rng.randint(0, width - w + 1));
      return Box{left, top, w, h};
    }
  }
  // Fallback: the whole image, cut to the nearest allowed ratio, centred.
  const double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < ratio_min) {
    h = round_half_even(w / ratio_min);
  } else if (in_ratio > ratio_max) {
    w = round_half_even(h * ratio_max);
  }
  return Box{(width - w) / 2, (height - h) / 2, w, h};
}

Image ClipPreprocess::resized_and_cropped(const Image& image) const {
  return center_crop(resize_shortest_side(image, size_), size_, size_);
}

void ClipPreprocess::apply(const Image& image, uint64_t, uint64_t, uint64_t, float* out) const {
  to_normalized_chw(resized_and_cropped(image), out);
}

void adjust_brightness(Image& image, double factor) {
  const auto f = static_cast<float>(factor);
  for (auto& v : image.pixels) v = blend(0.0f, v, f);
}

void adjust_contrast(Image& image, double factor) {
  double sum = 0;
  const size_t n = image.pixels.size() / 3;
  for (size_t i = 0; i < n; ++i) sum += grey_level(&image.pixels[3 * i]);
  const auto mean = static_cast<float>(static_cast<int>(sum / static_cast<double>(n) + 0.5));
  const auto f = static_cast<float>(factor);
  for (auto& v : image.pixels) v = blend(mean, v, f);
}

void adjust_saturation(Image& image, double factor) {
  const auto f = static_cast<float>(factor);
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    const float grey = grey_level(&image.pixels[i]);
    for (int c = 0; c < 3; ++c) image.pixels[i + c] = blend(grey, image.pixels[i + c], f);
  }
}

Image TrainAugment::augment(const Image& image, SampleRng& rng, bool& flipped) const {
  const AugmentOptions& o = options_;
  const Box box = random_resized_crop_box(image.height, image.width, o.scale_min, o.scale_max,
                                          o.ratio_min, o.ratio_max, rng);
  Image out = resize_bicubic(image, box, o.size, o.size);
  flipped = rng.uniform() < o.flip_probability;
  if (o.brightness > 0 || o.contrast > 0 || o.saturation > 0) {
    // torchvision ColorJitter: a random order, then one factor per enabled adjustment.
    int order[3] = {0, 1, 2};
    for (int i = 2; i > 0; --i) std::swap(order[i], order[rng.randint(0, i + 1)]);
    const double amounts[3] = {o.brightness, o.contrast, o.saturation};
    for (int which : order) {
      const double a = amounts[which];
      if (a <= 0) continue;
      const double factor = rng.uniform(std::max(0.0, 1.0 - a), 1.0 + a);
      if (which == 0) adjust_brightness(out, factor);
      if (which == 1) adjust_contrast(out, factor);
      if (which == 2) adjust_saturation(out, factor);
    }
  }
  return out;
}

void TrainAugment::apply(const Image& image, uint64_t seed, uint64_t epoch, uint64_t sample_id,
                         float* out) const {
  SampleRng rng(seed, epoch, sample_id);
  bool flipped = false;
  const Image augmented = augment(image, rng, flipped);
  to_normalized_chw(augmented, out, kClipMean, kClipStd, flipped);  // the flip folds in here
}

}  // namespace distill::data
