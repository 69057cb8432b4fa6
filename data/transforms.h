// Image transforms on 8-bit RGB images, matching PIL + torchvision bit for bit where it matters:
//   resize_bicubic        Pillow's Image.resize(..., BICUBIC) (antialiased when shrinking): the
//                         same filter, coefficient normalisation, 22-bit fixed point, horizontal
//                         pass then vertical, uint8 intermediate;
//   resize_shortest_side  torchvision Resize(size) (the long side is truncated, as int() does);
//   center_crop           torchvision CenterCrop (offsets rounded half to even, as Python does);
//   ClipPreprocess        Resize + CenterCrop + ToTensor + Normalize with CLIP's mean and std;
//   TrainAugment          RandomResizedCrop (torchvision's sampling, incl. the fallback),
//                         horizontal flip, optional colour jitter, then ToTensor + Normalize.
// Random choices come from SampleRng: Philox keyed by (seed, epoch) and counted by the sample id,
// so a sample's augmentation depends on (seed, epoch, sample id) and nothing else.
#pragma once

#include <array>
#include <cstdint>

#include "data/image.h"

namespace distill::data {

// CLIP's normalisation (DESIGN.md).
inline constexpr std::array<float, 3> kClipMean = {0.48145466f, 0.4578275f, 0.40821073f};
inline constexpr std::array<float, 3> kClipStd = {0.26862954f, 0.26130258f, 0.27577711f};

// A rectangle of an image: left x, top y, width, height.
struct Box {
  int x = 0, y = 0, width = 0, height = 0;
};

// Bicubic resize of `box` of `src` (the whole image by default) to out_width x out_height,
// exactly as PIL's img.crop(box).resize((out_width, out_height), Image.BICUBIC).
Image resize_bicubic(const Image& src, int out_width, int out_height);
Image resize_bicubic(const Image& src, const Box& box, int out_width, int out_height);
// torchvision Resize(size): the shorter side becomes `size`.
Image resize_shortest_side(const Image& src, int size);
Image crop(const Image& src, const Box& box);
Image center_crop(const Image& src, int height, int width);
Image flip_horizontal(const Image& src);

// HWC uint8 -> CHW float, (v / 255 - mean) / std per channel (mean 0, std 1: ToTensor alone).
void to_normalized_chw(const Image& src, float* out, const std::array<float, 3>& mean = kClipMean,
                       const std::array<float, 3>& std = kClipStd, bool flip = false);

// Per-sample random numbers (see the top of this file).
class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t epoch, uint64_t sample_id);
  double uniform();                            // [0, 1), 53 random bits
  double uniform(double low, double high);     // [low, high)
  int64_t randint(int64_t low, int64_t high);  // [low, high)

 private:
  uint64_t key_;
  uint64_t counter_;
};

// The parameters torchvision's RandomResizedCrop.get_params draws (10 tries, then the central
// crop clamped to the ratio range).
Box random_resized_crop_box(int height, int width, double scale_min, double scale_max,
                            double ratio_min, double ratio_max, SampleRng& rng);

// Applies an output-size transform into CHW floats; what workers of the loader run.
class Transform {
 public:
  virtual ~Transform() = default;
  virtual int out_height() const = 0;
  virtual int out_width() const = 0;
  // Writes 3 * out_height() * out_width() floats.
  virtual void apply(const Image& image, uint64_t seed, uint64_t epoch, uint64_t sample_id,
                     float* out) const = 0;
};

// CLIP evaluation preprocessing: resize shortest side to `size`, center crop `size`, normalise.
class ClipPreprocess : public Transform {
 public:
  explicit ClipPreprocess(int size = 224) : size_(size) {}
  int out_height() const override { return size_; }
  int out_width() const override { return size_; }
  // The uint8 image before ToTensor/Normalize (what the PIL-fidelity fixture checks).
  Image resized_and_cropped(const Image& image) const;
  void apply(const Image& image, uint64_t seed, uint64_t epoch, uint64_t sample_id,
             float* out) const override;

 private:
  int size_;
};

struct AugmentOptions {
  int size = 224;
  double scale_min = 0.08, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  double flip_probability = 0.5;
  // Colour jitter factors (0: off), as torchvision ColorJitter(brightness, contrast, saturation):
  // each factor is drawn from [max(0, 1 - x), 1 + x] and applied in a random order.
  double brightness = 0, contrast = 0, saturation = 0;
};

class TrainAugment : public Transform {
 public:
  explicit TrainAugment(AugmentOptions options = {}) : options_(options) {}
  int out_height() const override { return options_.size; }
  int out_width() const override { return options_.size; }
  // The augmented uint8 image (before ToTensor/Normalize); `flipped` reports the flip.
  Image augment(const Image& image, SampleRng& rng, bool& flipped) const;
  void apply(const Image& image, uint64_t seed, uint64_t epoch, uint64_t sample_id,
             float* out) const override;
  const AugmentOptions& options() const { return options_; }

 private:
  AugmentOptions options_;
};

// Colour jitter on a uint8 image in place (torchvision's formulas for PIL images: brightness
// blends with black, contrast with the mean grey level, saturation with the grey image).
void adjust_brightness(Image& image, double factor);
void adjust_contrast(Image& image, double factor);
void adjust_saturation(Image& image, double factor);

}  // namespace distill::data
