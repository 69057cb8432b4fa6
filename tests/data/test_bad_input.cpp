// Bad input, one test each: a clear error naming the file (and member / offset), or with
// skip_bad_samples a skipped-sample count and message for the caller to print.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "data/captions.h"
#include "data/cifar.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/prompts.h"
#include "data/tar.h"
#include "data/webdataset.h"
#include "tests/data/data_test_util.h"

namespace distill::data {
namespace {

using testing::random_image;
using testing::ScratchDir;
using testing::write_bytes;
using testing::write_text;

using testing::error_of;

// A shard with `n` good samples (32x32 PNGs), labels k % 10.
TarWriter good_shard(int n, int first = 0) {
  TarWriter tar;
  for (int k = first; k < first + n; ++k) {
    const std::string key = std::string("s").append(std::to_string(k));  // (gcc 12 -Wrestrict)
    tar.add(key + ".png", encode_png(random_image(8, 8, k)));
    tar.add(key + ".cls", std::to_string(k % 10));
  }
  return tar;
}

TEST(BadInput, TruncatedTar) {
  ScratchDir dir;
  auto bytes = good_shard(4).finish();
  bytes.resize(bytes.size() / 2 + 100);  // cut inside a member's data
  write_bytes(dir / "cut.tar", bytes);
  const std::string msg = error_of([&] { WebDataset ds(dir / "cut.tar"); });
  EXPECT_MESSAGE_HAS(msg, "cut.tar");
  EXPECT_MESSAGE_HAS(msg, "truncated tar");
  EXPECT_MESSAGE_HAS(msg, "at offset");
  // A header cut short.
  bytes.resize(1024 + 100);
  write_bytes(dir / "cut2.tar", bytes);
  EXPECT_MESSAGE_HAS(error_of([&] { WebDataset ds(dir / "cut2.tar"); }), "truncated tar");
  // skip_bad_samples: the samples before the cut survive, the rest of the shard is reported.
  WebDataset skipping(std::vector<std::string>{dir / "cut.tar"}, ReaderOptions{true});
  EXPECT_GE(skipping.size(), 1);
  EXPECT_LT(skipping.size(), 4);
  EXPECT_EQ(skipping.skipped().count, 1);
  EXPECT_MESSAGE_HAS(skipping.skipped().messages[0], "cut.tar");
}

TEST(BadInput, TarMemberWithoutCls) {
  ScratchDir dir;
  TarWriter tar = good_shard(2);
  tar.add("lonely.png", encode_png(random_image(4, 4, 9)));
  tar.add("s5.png", encode_png(random_image(8, 8, 5)));
  tar.add("s5.cls", "5");
  tar.write(dir / "shard.tar");
  const std::string msg = error_of([&] { WebDataset ds(dir / "shard.tar"); });
  EXPECT_MESSAGE_HAS(msg, "shard.tar: member 'lonely.png' at offset 4096");
  EXPECT_MESSAGE_HAS(msg, "no .cls member");
  WebDataset skipping(std::vector<std::string>{dir / "shard.tar"}, ReaderOptions{true});
  EXPECT_EQ(skipping.size(), 3);
  EXPECT_EQ(skipping.skipped().count, 1);
}

TEST(BadInput, CorruptAndZeroByteJpeg) {
  ScratchDir dir;
  std::filesystem::create_directories(dir / "cls");
  const auto jpeg = encode_jpeg(testing::smooth_image(16, 16, 1));
  write_bytes(dir / "cls/a_good.jpg", jpeg);
  std::vector<uint8_t> corrupt(jpeg.begin(), jpeg.begin() + 40);  // header only
  write_bytes(dir / "cls/b_corrupt.jpg", corrupt);
  write_bytes(dir / "cls/c_empty.jpg", {});
  ImageFolder folder(dir.str());
  ASSERT_EQ(folder.size(), 3);
  EXPECT_EQ(folder.get(0).image.width, 16);
  const std::string corrupt_msg = error_of([&] { folder.get(1); });
  EXPECT_MESSAGE_HAS(corrupt_msg, "b_corrupt.jpg");
  EXPECT_MESSAGE_HAS(corrupt_msg, "cannot decode");
  const std::string empty_msg = error_of([&] { folder.get(2); });
  EXPECT_MESSAGE_HAS(empty_msg, "c_empty.jpg");
  EXPECT_MESSAGE_HAS(empty_msg, "0 bytes");

  // Through the loader: an error naming the file, or with skip_bad_samples a count at the end.
  auto dataset = std::make_shared<ImageFolder>(dir.str());
  auto transform = std::make_shared<ClipPreprocess>(8);
  LoaderOptions options;
  options.batch_size = 2;
  options.shuffle = false;
  DataLoader strict(dataset, transform, options);
  strict.start_epoch(0);
  Batch batch;
  const std::string loader_msg = error_of([&] {
    while (strict.next(batch)) {
    }
  });
  EXPECT_MESSAGE_HAS(loader_msg, "b_corrupt.jpg");
  options.skip_bad_samples = true;
  DataLoader lenient(dataset, transform, options);
  lenient.start_epoch(0);
  int64_t seen = 0;
  while (lenient.next(batch)) seen += batch.size();
  EXPECT_EQ(seen, 1);
  const BadSampleLog log = lenient.epoch_skipped();
  EXPECT_EQ(log.count, 2);
  ASSERT_EQ(log.messages.size(), 2u);
  EXPECT_MESSAGE_HAS(log.messages[0] + log.messages[1], "c_empty.jpg");
}

TEST(BadInput, LabelOutOfRange) {
  ScratchDir dir;
  TarWriter tar = good_shard(2);
  tar.add("s9.png", encode_png(random_image(8, 8, 9)));
  tar.add("s9.cls", "12");
  tar.write(dir / "shard.tar");
  write_text(dir / "classes.txt", "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
  const std::string msg = error_of([&] { WebDataset ds(dir / "shard.tar"); });
  EXPECT_MESSAGE_HAS(msg, "shard.tar: member 's9.cls'");
  EXPECT_MESSAGE_HAS(msg, "label 12 is out of range (10 classes)");
  // The same in a CIFAR record.
  write_cifar_binary(dir / "test_batch.bin", CifarVariant::Cifar10,
                     {random_image(32, 32, 1), random_image(32, 32, 2)}, {3, 11});
  const std::string cifar_msg = error_of([&] { CifarDataset ds(dir.str(), "test"); });
  EXPECT_MESSAGE_HAS(cifar_msg,
                     "test_batch.bin: record 1 at offset 3073: label 11 is out of range");
  CifarDataset skipping(dir.str(), "test", false, ReaderOptions{true});
  EXPECT_EQ(skipping.size(), 1);
  EXPECT_EQ(skipping.skipped().count, 1);
}

TEST(BadInput, CifarFileOfWrongSize) {
  ScratchDir dir;
  write_cifar_binary(dir / "test_batch.bin", CifarVariant::Cifar10, {random_image(32, 32, 1)}, {3});
  std::filesystem::resize_file(dir / "test_batch.bin", 3073 + 100);
  const std::string msg = error_of([&] { CifarDataset ds(dir.str(), "test"); });
  EXPECT_MESSAGE_HAS(
      msg, "test_batch.bin: 3173 bytes is not a whole number of 3073-byte CIFAR-10 records");
  CifarDataset skipping(dir.str(), "test", false, ReaderOptions{true});
  EXPECT_EQ(skipping.size(), 1);
  EXPECT_EQ(skipping.skipped().count, 1);
}

TEST(BadInput, IdxMagicMismatch) {
  ScratchDir dir;
  write_idx(dir / "images", {2, 2, 2}, std::vector<uint8_t>(8, 1));
  write_idx(dir / "labels", {2}, {0, 1});
  // Swapped: the labels file where the images are expected.
  const std::string msg = error_of([&] { IdxDataset ds(dir / "labels", dir / "images"); });
  EXPECT_MESSAGE_HAS(msg, "labels: IDX magic 0x00000801 does not match 0x00000803");
  write_bytes(dir / "garbage.gz", {0x1f, 0x8b, 8, 0, 0, 0});
  EXPECT_NE(error_of([&] { IdxDataset ds(dir / "garbage.gz", dir / "labels"); }), "");
}

TEST(BadInput, EmptyClassFolder) {
  ScratchDir dir;
  std::filesystem::create_directories(dir / "cat");
  std::filesystem::create_directories(dir / "dog");
  write_bytes(dir / "cat/1.png", encode_png(random_image(4, 4, 1)));
  write_text(dir / "dog/readme.txt", "no images here");
  const std::string msg = error_of([&] { ImageFolder folder(dir.str()); });
  EXPECT_MESSAGE_HAS(msg, "dog");
  EXPECT_MESSAGE_HAS(msg, "has no .jpg, .jpeg or .png images");
  ImageFolder skipping(dir.str(), ReaderOptions{true});
  EXPECT_EQ(skipping.num_classes(), 2);  // label indices stay stable
  EXPECT_EQ(skipping.size(), 1);
  EXPECT_EQ(skipping.skipped().count, 1);
}

TEST(BadInput, MissingCaptionImage) {
  ScratchDir dir;
  write_bytes(dir / "a.png", encode_png(random_image(4, 4, 1)));
  write_text(dir / "caps.tsv", "a.png\tfine\nmissing.jpg\ta ghost\n");
  const std::string msg = error_of([&] { read_captions(dir / "caps.tsv"); });
  EXPECT_MESSAGE_HAS(msg, "caps.tsv:2: image '");
  EXPECT_MESSAGE_HAS(msg, "missing.jpg' does not exist");
  BadSampleLog log;
  const auto items = read_captions(dir / "caps.tsv", "", ReaderOptions{true}, &log);
  EXPECT_EQ(items.size(), 1u);
  EXPECT_EQ(log.count, 1);
}

// Found by tests/fuzz/fuzz_idx: three 32-bit dimensions overflowed the int64 size product
// (undefined behaviour) instead of failing the size check.
TEST(BadInput, IdxHeaderDimensionsOverflow) {
  ScratchDir dir;
  write_idx(dir / "labels", {1}, {0});
  const std::vector<uint8_t> images = {0, 0, 8, 3, 0x4e, 0x4e, 0x4e, 0x4e, 0x4e, 0,
                                       1, 0, 0, 0, 1,    0,    0,    0,    1,    0x80};
  write_bytes(dir / "images", images);
  const std::string msg = error_of([&] { IdxDataset ds(dir / "images", dir / "labels"); });
  EXPECT_MESSAGE_HAS(msg, "images: IDX header says more than 2^64 bytes of data");
  // Zero images of an absurd size: the sizes alone are corrupt.
  write_idx(dir / "labels0", {0}, {});
  write_bytes(dir / "images0", {0, 0, 8, 3, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1});
  EXPECT_MESSAGE_HAS(error_of([&] { IdxDataset ds(dir / "images0", dir / "labels0"); }),
                     "is not a plausible image size");
}

// A tar header whose base-256 size is 2^64 - 512: data_offset + size wrapped to 0, passed the
// truncation check, and the reader then tried to allocate 2^64 bytes.
TEST(BadInput, TarSizeFieldThatWrapsAround) {
  ScratchDir dir;
  for (char type : {'0', 'L'}) {
    std::vector<uint8_t> h(512, 0);
    std::memcpy(h.data(), "big.cls", 7);
    std::memcpy(h.data() + 100, "0000644", 7);
    h[124] = 0x80;  // base-256 size
    for (int i = 128; i < 136; ++i) h[i] = 0xff;
    h[134] = 0xfe;
    h[135] = 0x00;
    h[156] = static_cast<uint8_t>(type);
    std::memcpy(h.data() + 257, "ustar", 6);
    std::memset(h.data() + 148, ' ', 8);
    unsigned sum = 0;
    for (uint8_t b : h) sum += b;
    std::snprintf(reinterpret_cast<char*>(h.data() + 148), 8, "%06o", sum);
    h.resize(512 * 3, 0);
    write_bytes(dir / "wrap.tar", h);
    const std::string msg = error_of([&] {
      TarReader tar(dir / "wrap.tar");
      TarMember member;
      while (tar.next(member)) tar.read_data();
    });
    EXPECT_MESSAGE_HAS(msg, "wrap.tar: truncated tar: member");
  }
}

// Found by tests/fuzz/fuzz_image: a 40-byte GIF claiming a huge canvas made stb_image allocate
// gigabytes; every format now has PIL's decompression-bomb limit, as JPEG had.
TEST(BadInput, ImageHeaderClaimingHugeSize) {
  std::vector<uint8_t> gif = {'G', 'I', 'F', '8', '9', 'a', 0xff, 0xff, 0xff, 0xff, 0x00, 0, 0};
  gif.resize(64, 0);
  const std::string msg = error_of([&] { decode_image(gif.data(), gif.size(), "huge.gif"); });
  EXPECT_MESSAGE_HAS(msg, "huge.gif: cannot decode image (65535 x 65535 pixels");
}

// Found by tests/fuzz/fuzz_image: stb_image's PNM reader overflowed a signed int on a long width
// (undefined behaviour); PNM is not built in, so this is a clean "cannot decode".
TEST(BadInput, PnmWithHugeWidthIsRejected) {
  const std::string pnm = "P6 21111111110 1 255\n";
  const std::vector<uint8_t> bytes(pnm.begin(), pnm.end());
  EXPECT_MESSAGE_HAS(error_of([&] { decode_image(bytes.data(), bytes.size(), "x.ppm"); }),
                     "x.ppm: cannot decode image");
}

// DISTILL_DATA_DIR (the class-name and prompt-template folder) pointing nowhere, and a name
// that has no file: the path tried and the variable are named.
TEST(BadInput, ClassNamesAndTemplatesThatDoNotExist) {
  EXPECT_MESSAGE_HAS(error_of([] { load_class_names("cifar11"); }),
                     "classnames/cifar11.txt: no such classnames file");
  EXPECT_MESSAGE_HAS(error_of([] { load_templates("mnist-prompts"); }),
                     "templates/mnist-prompts.txt: no such templates file");
  const char* old = std::getenv("DISTILL_DATA_DIR");
  const std::string saved = old ? old : "";
  ::setenv("DISTILL_DATA_DIR", "/nonexistent/distill-data", 1);
  const std::string msg = error_of([] { load_class_names("cifar10"); });
  if (old) {
    ::setenv("DISTILL_DATA_DIR", saved.c_str(), 1);
  } else {
    ::unsetenv("DISTILL_DATA_DIR");
  }
  EXPECT_MESSAGE_HAS(msg, "/nonexistent/distill-data/classnames/cifar10.txt: no such classnames");
  EXPECT_MESSAGE_HAS(msg, "set DISTILL_DATA_DIR");
}

TEST(BadInput, CaptionFileMalformedLines) {
  ScratchDir dir;
  write_bytes(dir / "a.png", encode_png(random_image(4, 4, 1)));
  write_text(dir / "notab.tsv", "a.png\tfine\na.png a caption without a tab\n");
  EXPECT_MESSAGE_HAS(error_of([&] { read_captions(dir / "notab.tsv"); }),
                     "notab.tsv:2: expected image<TAB>caption");
  write_text(dir / "bad.jsonl", "{\"image\": \"a.png\", \"caption\": \"ok\"}\n{\"image\": \n");
  EXPECT_MESSAGE_HAS(error_of([&] { read_captions(dir / "bad.jsonl"); }),
                     "bad.jsonl:2: not a JSON object");
  write_text(dir / "noimage.jsonl", "{\"file\": \"a.png\", \"caption\": \"ok\"}\n");
  EXPECT_MESSAGE_HAS(error_of([&] { read_captions(dir / "noimage.jsonl"); }),
                     "noimage.jsonl:1: expected {\"image\": ..., \"caption\": ...}");
  write_text(dir / "nocaption.jsonl", "{\"image\": \"a.png\", \"caption\": 7}\n");
  EXPECT_MESSAGE_HAS(error_of([&] { read_captions(dir / "nocaption.jsonl"); }),
                     "nocaption.jsonl:1: no \"caption\" string or \"captions\" list");
  write_text(dir / "empty.tsv", "\n\n");
  EXPECT_MESSAGE_HAS(error_of([&] { CaptionDataset ds(dir / "empty.tsv"); }),
                     "empty.tsv: no captioned images");
  EXPECT_MESSAGE_HAS(error_of([&] { read_captions(dir / "absent.tsv"); }),
                     "absent.tsv: cannot open caption file");
}

TEST(BadInput, TarMembersThatAreNotASample) {
  ScratchDir dir;
  TarWriter words = good_shard(1);
  words.add("s7.png", encode_png(random_image(8, 8, 7)));
  words.add("s7.cls", "cat");
  words.write(dir / "words.tar");
  EXPECT_MESSAGE_HAS(error_of([&] { WebDataset ds(dir / "words.tar"); }),
                     "words.tar: member 's7.cls' at offset 3072: 'cat' is not a class index");
  TarWriter no_image = good_shard(1);
  no_image.add("s8.cls", "3");
  no_image.write(dir / "noimage.tar");
  EXPECT_MESSAGE_HAS(error_of([&] { WebDataset ds(dir / "noimage.tar"); }),
                     "sample 's8' has no .jpg/.jpeg/.png member");
  // A file that is not a tar at all.
  write_text(dir / "notes.tar", std::string(1024, 'x'));
  EXPECT_MESSAGE_HAS(error_of([&] { WebDataset ds(dir / "notes.tar"); }),
                     "notes.tar: corrupt tar header at offset 0");
}

TEST(BadInput, ShardPatterns) {
  EXPECT_MESSAGE_HAS(error_of([] { expand_shard_pattern("train-{0..4.tar"); }),
                     "shard pattern 'train-{0..4.tar': unclosed '{'");
  EXPECT_MESSAGE_HAS(error_of([] { expand_shard_pattern("train-{5..1}.tar"); }),
                     "bad range {5..1}");
  EXPECT_MESSAGE_HAS(error_of([] { expand_shard_pattern("train-{a..c}.tar"); }), "range {a..c}");
}

TEST(BadInput, IdxFilesThatDisagree) {
  ScratchDir dir;
  write_idx(dir / "images", {2, 2, 2}, std::vector<uint8_t>(8, 1));
  write_idx(dir / "labels3", {3}, {0, 1, 2});
  EXPECT_MESSAGE_HAS(error_of([&] { IdxDataset ds(dir / "images", dir / "labels3"); }),
                     "images has 2 images but " + (dir / "labels3") + " has 3 labels");
  write_idx(dir / "labels", {2}, {0, 10});
  EXPECT_MESSAGE_HAS(error_of([&] { IdxDataset ds(dir / "images", dir / "labels"); }),
                     "labels: label 10 of sample 1 (offset 9) is out of range (10 classes)");
  write_bytes(dir / "short", {0, 0});
  EXPECT_MESSAGE_HAS(error_of([&] { IdxDataset ds(dir / "short", dir / "labels"); }),
                     "short: too short for an IDX file (2 bytes)");
  // Pixel data cut short.
  write_idx(dir / "full", {2, 2, 2}, std::vector<uint8_t>(8, 1));
  std::filesystem::resize_file(dir / "full", std::filesystem::file_size(dir / "full") - 3);
  EXPECT_MESSAGE_HAS(error_of([&] { IdxDataset ds(dir / "full", dir / "labels"); }),
                     "full: IDX header says");
  EXPECT_MESSAGE_HAS(error_of([&] { IdxDataset ds(dir / "nothing", dir / "labels"); }),
                     "nothing: no such file");
}

TEST(BadInput, CifarFolderProblems) {
  ScratchDir dir;
  EXPECT_MESSAGE_HAS(error_of([&] { CifarDataset ds(dir.str(), "test"); }),
                     "no CIFAR binary files");
  write_cifar_binary(dir / "test_batch.bin", CifarVariant::Cifar10, {random_image(32, 32, 1)}, {3});
  EXPECT_MESSAGE_HAS(error_of([&] { CifarDataset ds(dir.str(), "test", /*coarse=*/true); }),
                     "coarse labels exist only in CIFAR-100");
  // The train split needs data_batch_1..5.bin; this folder has only the test batch.
  EXPECT_MESSAGE_HAS(error_of([&] { CifarDataset ds(dir.str(), "train"); }),
                     "data_batch_1.bin: cannot open");
  write_text(dir / "batches.meta.txt", "cat\ndog\n");
  EXPECT_MESSAGE_HAS(error_of([&] { CifarDataset ds(dir.str(), "test"); }),
                     "batches.meta.txt: expected 10 class names, found 2");
  std::filesystem::remove(dir / "batches.meta.txt");
  std::filesystem::resize_file(dir / "test_batch.bin", 0);
  EXPECT_MESSAGE_HAS(error_of([&] { CifarDataset ds(dir.str(), "test"); }),
                     "test_batch.bin: 0 bytes is not a whole number of 3073-byte CIFAR-10 records");
}

TEST(BadInput, ImageFolderRootAndNonImageFiles) {
  ScratchDir dir;
  write_text(dir / "file.txt", "x");
  EXPECT_MESSAGE_HAS(error_of([&] { ImageFolder f(dir / "file.txt"); }),
                     "file.txt: not a folder (ImageFolder expects root/<class>/<image>)");
  std::filesystem::create_directories(dir / "root");
  EXPECT_MESSAGE_HAS(error_of([&] { ImageFolder f(dir / "root"); }), "root: no class folders");
  // A text file with an image's name.
  std::filesystem::create_directories(dir / "root/cat");
  write_text(dir / "root/cat/photo.png", "this is not a PNG");
  ImageFolder folder(dir / "root");
  EXPECT_MESSAGE_HAS(error_of([&] { folder.get(0); }), "photo.png: cannot decode image");
}

}  // namespace
}  // namespace distill::data
