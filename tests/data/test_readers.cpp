// The readers on files generated here in each official format: CIFAR-10/100 binary, ImageFolder,
// WebDataset tar shards, IDX, captions; and the class-name / template files.
#include <gtest/gtest.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "data/captions.h"
#include "data/cifar.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/prompts.h"
#include "data/webdataset.h"
#include "tests/data/data_test_util.h"

namespace distill::data {
namespace {

using testing::random_image;
using testing::ScratchDir;
using testing::write_bytes;
using testing::write_text;

std::vector<uint8_t> png_with_channels(const Image& rgb, int channels) {
  std::vector<uint8_t> px;
  for (size_t p = 0; p < rgb.pixels.size() / 3; ++p) {
    if (channels == 1) px.push_back(rgb.pixels[3 * p]);
    if (channels >= 3)
      px.insert(px.end(), rgb.pixels.begin() + 3 * p, rgb.pixels.begin() + 3 * p + 3);
    if (channels == 4) px.push_back(static_cast<uint8_t>(p * 7));
  }
  std::vector<uint8_t> out;
  stbi_write_png_to_func(
      [](void* ctx, void* data, int size) {
        auto* o = static_cast<std::vector<uint8_t>*>(ctx);
        o->insert(o->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
      },
      &out, rgb.width, rgb.height, channels, px.data(), rgb.width * channels);
  return out;
}

TEST(Cifar, Cifar10BinaryRoundTrip) {
  ScratchDir scratch;
  std::filesystem::create_directories(scratch / "cifar-10-batches-bin");
  const std::string base = scratch / "cifar-10-batches-bin";
  auto in = [&](const std::string& f) { return base + "/" + f; };
  std::vector<Image> all;
  std::vector<int64_t> all_labels;
  for (int b = 1; b <= 5; ++b) {
    std::vector<Image> images;
    std::vector<int64_t> labels;
    for (int k = 0; k < 3; ++k) {
      images.push_back(random_image(32, 32, 100 * b + k));
      labels.push_back((b * 3 + k) % 10);
    }
    write_cifar_binary(in("data_batch_" + std::to_string(b) + ".bin"), CifarVariant::Cifar10,
                       images, labels);
    all.insert(all.end(), images.begin(), images.end());
    all_labels.insert(all_labels.end(), labels.begin(), labels.end());
  }
  write_cifar_binary(in("test_batch.bin"), CifarVariant::Cifar10, {random_image(32, 32, 7)}, {9});
  // The official file is 30,730,000 bytes for 10,000 records of 3,073.
  EXPECT_EQ(std::filesystem::file_size(in("data_batch_1.bin")), 3u * 3073u);

  CifarDataset train(base, "train");
  ASSERT_EQ(train.size(), 15);
  EXPECT_EQ(train.variant(), CifarVariant::Cifar10);
  EXPECT_EQ(train.class_names(), cifar10_class_names());
  for (int64_t i = 0; i < train.size(); ++i) {
    const Sample s = train.get(i);
    EXPECT_EQ(s.label, all_labels[static_cast<size_t>(i)]);
    EXPECT_EQ(s.image.pixels, all[static_cast<size_t>(i)].pixels) << "sample " << i;
  }
  EXPECT_NE(train.describe(4).find("data_batch_2.bin record 1"), std::string::npos);
  CifarDataset test(base, "test");
  ASSERT_EQ(test.size(), 1);
  EXPECT_EQ(test.label(0), 9);
  EXPECT_EQ(test.class_counts()[9], 1);

  // batches.meta.txt, when present, names the classes; the parent folder also works.
  write_text(in("batches.meta.txt"), "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n");
  CifarDataset via_parent(scratch.str(), "test");
  EXPECT_EQ(via_parent.class_names().front(), "a");
  EXPECT_TRUE(CifarDataset::looks_like(scratch.str()));
}

TEST(Cifar, Cifar100CoarseAndFineLabels) {
  ScratchDir dir;
  std::vector<Image> images = {random_image(32, 32, 1), random_image(32, 32, 2),
                               random_image(32, 32, 3)};
  write_cifar_binary(dir / "train.bin", CifarVariant::Cifar100, images, {99, 0, 42}, {19, 4, 7});
  // Records are 3,074 bytes: coarse label, fine label, pixels.
  EXPECT_EQ(std::filesystem::file_size(dir / "train.bin"), 3u * 3074u);
  CifarDataset fine(dir.str(), "train");
  EXPECT_EQ(fine.variant(), CifarVariant::Cifar100);
  ASSERT_EQ(fine.size(), 3);
  EXPECT_EQ(fine.num_classes(), 100);
  EXPECT_EQ(fine.label(0), 99);
  EXPECT_EQ(fine.class_names()[99], "worm");
  EXPECT_EQ(fine.coarse_label(0), 19);
  EXPECT_EQ(fine.get(2).image.pixels, images[2].pixels);
  CifarDataset coarse(dir.str(), "train", /*coarse=*/true);
  EXPECT_EQ(coarse.num_classes(), 20);
  EXPECT_EQ(coarse.label(1), 4);
  EXPECT_EQ(coarse.fine_label(1), 0);
  EXPECT_EQ(coarse.class_names()[19], "vehicles_2");
}

TEST(ImageFolder, SortedClassesAndImageConversions) {
  ScratchDir dir;
  for (const char* c : {"b_dog", "a_cat", "c_misc"}) std::filesystem::create_directories(dir / c);
  std::filesystem::create_directories(dir / "c_misc/nested");
  const Image cat = random_image(5, 7, 1), dog = random_image(6, 4, 2),
              grey = random_image(3, 3, 3), rgba = random_image(4, 2, 4);
  write_bytes(dir / "a_cat/2.png", encode_png(cat));
  write_bytes(dir / "a_cat/1.JPEG", encode_jpeg(testing::smooth_image(6, 4, 9)));
  write_bytes(dir / "a_cat/notes.txt", {1, 2, 3});
  write_bytes(dir / "b_dog/x.png", encode_png(dog));
  write_bytes(dir / "c_misc/nested/grey.png", png_with_channels(grey, 1));
  write_bytes(dir / "c_misc/rgba.png", png_with_channels(rgba, 4));

  ImageFolder folder(dir.str());
  EXPECT_EQ(folder.class_names(), (std::vector<std::string>{"a_cat", "b_dog", "c_misc"}));
  ASSERT_EQ(folder.size(), 5);
  EXPECT_EQ(folder.class_counts(), (std::vector<int64_t>{2, 1, 2}));
  EXPECT_NE(folder.describe(0).find("1.JPEG"), std::string::npos);  // sorted within the class
  EXPECT_EQ(folder.get(1).image.pixels, cat.pixels);
  EXPECT_EQ(folder.get(2).label, 1);
  // Grey: each channel equal; RGBA: alpha dropped.
  const Sample g = folder.get(3);
  ASSERT_NE(folder.describe(3).find("grey.png"), std::string::npos);
  for (size_t p = 0; p < 9; ++p) {
    EXPECT_EQ(g.image.pixels[3 * p], grey.pixels[3 * p]);
    EXPECT_EQ(g.image.pixels[3 * p + 2], grey.pixels[3 * p]);
  }
  EXPECT_EQ(folder.get(4).image.pixels, rgba.pixels);
}

TEST(WebDataset, BracePatternsExpandInOrder) {
  EXPECT_EQ(expand_shard_pattern("train-{0000..0002}.tar"),
            (std::vector<std::string>{"train-0000.tar", "train-0001.tar", "train-0002.tar"}));
  EXPECT_EQ(expand_shard_pattern("{a,b}-{8..10}.tar").size(), 6u);
  EXPECT_EQ(expand_shard_pattern("{a,b}-{8..10}.tar")[2], "a-10.tar");
  EXPECT_EQ(expand_shard_pattern("x.tar::y-{1..2}.tar"),
            (std::vector<std::string>{"x.tar", "y-1.tar", "y-2.tar"}));
  EXPECT_EQ(expand_shard_pattern("plain.tar"), (std::vector<std::string>{"plain.tar"}));
  EXPECT_THROW(expand_shard_pattern("a-{1..}.tar"), Error);
  EXPECT_THROW(expand_shard_pattern("a-{1..2.tar"), Error);
}

TEST(WebDataset, IndexesAndStreamsShards) {
  ScratchDir dir;
  std::vector<Image> images;
  for (int s = 0; s < 2; ++s) {
    TarWriter tar;
    for (int k = 0; k < 4; ++k) {
      const int n = s * 4 + k;
      images.push_back(random_image(6 + k, 5, 50 + n));
      const std::string key = "sub/sample_" + std::to_string(n);
      tar.add(key + ".png", encode_png(images.back()));
      tar.add(key + ".cls", std::to_string(n % 3) + "\n");
      tar.add(key + ".txt", "ignored");
    }
    tar.write(dir / ("shard-" + std::to_string(s) + ".tar"));
  }
  write_text(dir / "classes.txt", "zero\none\ntwo\n");

  WebDataset ds(dir / "shard-{0..1}.tar");
  ASSERT_EQ(ds.size(), 8);
  EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"zero", "one", "two"}));
  EXPECT_EQ(ds.class_counts(), (std::vector<int64_t>{3, 3, 2}));
  EXPECT_EQ(ds.key(5), "sub/sample_5");
  EXPECT_EQ(ds.shard_of(5), 1);
  for (int64_t i = 0; i < ds.size(); ++i) {
    const Sample s = ds.get(i);
    EXPECT_EQ(s.label, i % 3);
    EXPECT_EQ(s.image.pixels, images[static_cast<size_t>(i)].pixels);
  }
  // The streaming reader sees the same samples in the same order.
  ShardReader reader(dir / "shard-1.tar", 1, 3);
  ShardSample sample;
  int64_t count = 0;
  while (reader.next(sample)) {
    EXPECT_EQ(sample.index_in_shard, count);
    const Image decoded = decode_image(sample.image.data(), sample.image.size(), sample.where);
    EXPECT_EQ(decoded.pixels, images[static_cast<size_t>(4 + count)].pixels);
    ++count;
  }
  EXPECT_EQ(count, 4);
}

TEST(WebDataset, LongMemberNamesAndCorruptHeaders) {
  ScratchDir dir;
  const std::string key = "deep/" + std::string(120, 'k');
  const Image im = random_image(3, 4, 1);
  TarWriter tar;
  tar.add(key + ".png", encode_png(im));
  tar.add(key + ".cls", "2");
  tar.write(dir / "long.tar");
  WebDataset ds(std::vector<std::string>{dir / "long.tar"});
  ASSERT_EQ(ds.size(), 1);
  EXPECT_EQ(ds.key(0), key);
  EXPECT_EQ(ds.get(0).image.pixels, im.pixels);
  // A damaged header fails its checksum.
  auto bytes = tar.finish();
  bytes[2048 + 10] ^= 0x5a;  // inside the second member's long-name header
  testing::write_bytes(dir / "bad.tar", bytes);
  try {
    WebDataset bad(std::vector<std::string>{dir / "bad.tar"});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.tar: corrupt tar header at offset 2048"),
              std::string::npos)
        << e.what();
  }
}

TEST(Idx, RawAndGzipFilesReadAlike) {
  ScratchDir dir;
  std::vector<uint8_t> pixels(4 * 3 * 2), labels = {3, 1, 4, 1};
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 11);
  write_idx(dir / "train-images-idx3-ubyte", {4, 3, 2}, pixels);
  write_idx(dir / "train-labels-idx1-ubyte", {4}, labels);
  write_idx(dir / "imgs.gz", {4, 3, 2}, pixels);
  write_idx(dir / "labels.gz", {4}, labels);
  std::string im, lb;
  ASSERT_TRUE(IdxDataset::find_in_folder(dir.str(), "train", im, lb));
  IdxDataset raw(im, lb);
  IdxDataset gz(dir / "imgs.gz", dir / "labels.gz");
  ASSERT_EQ(raw.size(), 4);
  EXPECT_EQ(raw.rows(), 3);
  EXPECT_EQ(raw.cols(), 2);
  EXPECT_EQ(raw.class_names().size(), 10u);
  for (int64_t i = 0; i < 4; ++i) {
    const Sample a = raw.get(i), b = gz.get(i);
    EXPECT_EQ(a.label, labels[static_cast<size_t>(i)]);
    EXPECT_EQ(a.image.pixels, b.image.pixels);
    EXPECT_EQ(a.image.pixels[3 * 5 + 1], pixels[static_cast<size_t>(i) * 6 + 5]);  // grey -> RGB
  }
  std::filesystem::create_directories(dir / "fashion");
  write_idx(dir / "fashion/x-images.gz", {4, 3, 2}, pixels);
  IdxDataset fashion(dir / "fashion/x-images.gz", lb);
  EXPECT_EQ(fashion.class_names()[9], "Ankle boot");
}

TEST(Idx, RealFashionMnistWhenInstalled) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  std::string im, lb;
  if (!IdxDataset::find_in_folder(dir, "t10k", im, lb))
    GTEST_SKIP() << "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)";
  IdxDataset test(im, lb);
  EXPECT_EQ(test.size(), 10000);
  EXPECT_EQ(test.rows(), 28);
  EXPECT_EQ(test.class_names()[0], "T-shirt/top");
  for (int64_t c : test.class_counts()) EXPECT_EQ(c, 1000);
}

TEST(Captions, TsvAndJsonLinesGroupCaptionsByImage) {
  ScratchDir dir;
  write_bytes(dir / "a.png", encode_png(random_image(4, 4, 1)));
  write_bytes(dir / "b.png", encode_png(random_image(4, 6, 2)));
  write_text(dir / "caps.tsv",
             "image\tcaption\na.png\ta red thing\nb.png\ta blue thing\r\n\na.png\tanother one\n");
  const auto tsv = read_captions(dir / "caps.tsv");
  ASSERT_EQ(tsv.size(), 2u);
  EXPECT_EQ(tsv[0].captions, (std::vector<std::string>{"a red thing", "another one"}));
  EXPECT_EQ(tsv[1].captions, (std::vector<std::string>{"a blue thing"}));
  write_text(dir / "caps.jsonl",
             "{\"image\": \"b.png\", \"captions\": [\"one\", \"two\"]}\n{\"image\": \"a.png\", "
             "\"caption\": \"x\"}\n");
  CaptionDataset ds(dir / "caps.jsonl");
  ASSERT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.captions(0).size(), 2u);
  EXPECT_EQ(ds.get(0).image.width, 6);
  EXPECT_EQ(ds.label(1), 1);
}

TEST(Captions, RealCaptionSample) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("captions-sample/captions.tsv");
  CaptionDataset ds(testing::shared_data_dir() + "/captions-sample/captions.tsv");
  EXPECT_EQ(ds.size(), 8);
  EXPECT_EQ(ds.captions(1).front(), "a facial photo of a tabby cat");
}

TEST(Prompts, ShippedClassNamesAndTemplates) {
  EXPECT_EQ(load_class_names("cifar10").size(), 10u);
  EXPECT_EQ(load_class_names("cifar100").size(), 100u);
  EXPECT_EQ(load_class_names("imagenet").size(), 1000u);
  EXPECT_EQ(load_class_names("fashion_mnist").size(), 10u);
  EXPECT_EQ(load_templates("cifar").size(), 18u);
  EXPECT_EQ(load_templates("imagenet").size(), 80u);
  EXPECT_EQ(load_class_names("cifar100")[1], "aquarium fish");
  EXPECT_EQ(load_class_names("imagenet")[0], "tench");
  EXPECT_EQ(fill_template(load_templates("cifar")[0], "cat"), "a photo of a cat.");
  // The binary reader's official names are CLIP's with underscores.
  const auto clip = load_class_names("cifar100");
  for (size_t c = 0; c < clip.size(); ++c) {
    std::string official = cifar100_fine_class_names()[c];
    std::replace(official.begin(), official.end(), '_', ' ');
    EXPECT_EQ(clip[c], official);
  }
  EXPECT_THROW(load_templates("nonexistent"), Error);
}

}  // namespace
}  // namespace distill::data
