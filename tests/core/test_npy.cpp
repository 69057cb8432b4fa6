// .npy writing and reading (what `encode-* --out` produces).
#include <filesystem>
#include <fstream>

#include "core/npy.h"
#include "tests/test_util.h"

namespace distill::testing {
namespace {

TEST(Npy, RoundTripsShapesAndDtypes) {
  const std::string path = std::filesystem::temp_directory_path() / "distill_npy_test.npy";
  for (const Shape& shape : {Shape{5}, Shape{2, 3}, Shape{2, 1, 4}}) {
    const Tensor t = random_tensor(shape, 1);
    save_npy(path, t);
    const Tensor back = load_npy(path);
    EXPECT_EQ(back.shape(), shape);
    EXPECT_EQ(back.to_float_vector(), t.to_float_vector());
    // The header is padded so the data starts at a multiple of 64 bytes, as numpy writes it.
    EXPECT_EQ((std::filesystem::file_size(path) - t.nbytes()) % 64, 0u);
  }
  save_npy(path, Tensor::from_vector(std::vector<int64_t>{1, -2, 3}, {3}));
  EXPECT_EQ(load_npy(path).dtype(), DType::I64);
  EXPECT_EQ(load_npy(path).to_int_vector(), (std::vector<int64_t>{1, -2, 3}));
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  try {
    load_npy(path);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, path));
    EXPECT_TRUE(message_has(e, "truncated"));
  }
  std::ofstream(path) << "not numpy";
  EXPECT_THROW(load_npy(path), Error);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace distill::testing
