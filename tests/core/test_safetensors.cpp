// safetensors reader and writer: the Python-written fixture, round trips of our own files, and a
// clear error (naming the file and the problem), never a crash, for every kind of bad file.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/safetensors.h"
#include "tests/test_util.h"

namespace distill {
namespace {

namespace fs = std::filesystem;

const std::string kFixtureDir = std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/safetensors";

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// A safetensors file from its parts: little-endian header length, header, data.
std::string safetensors_bytes(const std::string& header, const std::string& data,
                              uint64_t header_length_field) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(header_length_field >> (8 * i));
  return out + header + data;
}
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return safetensors_bytes(header, data, header.size());
}

// Each test gets a fresh directory, removed afterwards.
class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("distill_safetensors_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string write_file(const std::string& name, const std::string& bytes) const {
    write_bytes(dir_ / name, bytes);
    return path(name);
  }
  std::vector<std::string> dir_entries() const {
    std::vector<std::string> out;
    for (const auto& entry : fs::directory_iterator(dir_)) out.push_back(entry.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path dir_;
};

// Opening `path` throws distill::Error whose message names the file and contains every part.
::testing::AssertionResult open_fails_with(const std::string& path,
                                           const std::vector<std::string>& parts) {
  try {
    SafetensorsFile file(path);
    return ::testing::AssertionFailure() << "opened " << path << " without an error";
  } catch (const Error& e) {
    const std::string message = e.what();
    if (message.find(path) == std::string::npos)
      return ::testing::AssertionFailure() << "message does not name the file: " << message;
    for (const auto& part : parts) {
      if (message.find(part) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks \"" << part << "\": " << message;
    }
    return ::testing::AssertionSuccess() << message;
  }
}

// Contiguous host bytes of a tensor.
std::string tensor_bytes(const Tensor& t) {
  const Tensor host = t.to(Device::cpu()).contiguous();
  return std::string(static_cast<const char*>(host.data_ptr()), host.nbytes());
}

// ---- the Python-written fixture

TEST_F(Safetensors, ReadsPythonFixture) {
  const auto expected = nlohmann::json::parse(read_bytes(kFixtureDir + "/reference.json"));
  const std::string fixture = kFixtureDir + "/reference.safetensors";
  SafetensorsFile file(fixture);

  std::set<std::string> expected_names;
  for (const auto& [name, _] : expected["tensors"].items()) expected_names.insert(name);
  EXPECT_EQ(std::set<std::string>(file.names().begin(), file.names().end()), expected_names);
  EXPECT_EQ(file.names().size(), expected_names.size());

  const std::map<std::string, DType> dtypes = {
      {"F32", DType::F32}, {"F64", DType::F64}, {"BF16", DType::BF16}, {"F16", DType::F16},
      {"I32", DType::I32}, {"I64", DType::I64}, {"U8", DType::U8},     {"BOOL", DType::U8}};
  for (const auto& [name, want] : expected["tensors"].items()) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(file.contains(name));
    const auto& info = file.info(name);
    EXPECT_EQ(info.file_dtype, want["dtype"].get<std::string>());
    EXPECT_EQ(info.dtype, dtypes.at(want["dtype"].get<std::string>()));
    EXPECT_EQ(info.shape, want["shape"].get<Shape>());

    const Tensor t = file.tensor(name);
    EXPECT_EQ(t.dtype(), info.dtype);
    EXPECT_EQ(t.shape(), info.shape);
    EXPECT_TRUE(t.device().is_cpu());
    if (is_floating(t.dtype())) {
      // The sidecar holds the exact stored values, so compare exactly.
      EXPECT_EQ(t.to_double_vector(), want["values"].get<std::vector<double>>());
    } else {
      EXPECT_EQ(t.to_int_vector(), want["values"].get<std::vector<int64_t>>());
    }
  }
  EXPECT_EQ(file.metadata(), (expected["metadata"].get<std::map<std::string, std::string>>()));
  EXPECT_EQ(file.metadata().at("note"), "distill fixture \u2713 \u00fc");

  const auto all = file.load_all();
  ASSERT_EQ(all.size(), file.names().size());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].first, file.names()[i]);
}

TEST_F(Safetensors, AlignedTensorsAreZeroCopyAndOutliveTheFile) {
  const std::string name = "encoder.layer.0.weight";
  Tensor first;
  std::vector<float> values;
  {
    SafetensorsFile file(kFixtureDir + "/reference.safetensors");
    first = file.tensor(name);
    const Tensor second = file.tensor(name);
    EXPECT_EQ(first.data_ptr(), second.data_ptr()) << "aligned F32 data should alias the mapping";
    values = first.to_float_vector();
  }
  // The file object is gone; the tensor keeps the mapping alive.
  EXPECT_EQ(first.to_float_vector(), values);
  // Writing to it is private to the process: the file is unchanged.
  first.fill_(42.0);
  EXPECT_EQ(first.to_float_vector(), std::vector<float>(24, 42.0f));
  SafetensorsFile reopened(kFixtureDir + "/reference.safetensors");
  EXPECT_EQ(reopened.tensor(name).to_float_vector(), values);
}

TEST_F(Safetensors, MissingTensorNameThrows) {
  const std::string fixture = kFixtureDir + "/reference.safetensors";
  SafetensorsFile file(fixture);
  try {
    file.tensor("no.such.weight");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fixture), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no.such.weight"), std::string::npos) << e.what();
  }
}

// ---- our writer

std::vector<std::pair<std::string, Tensor>> one_tensor_per_dtype() {
  const std::vector<int32_t> i32 = {-7, 0, 2147483647};
  const std::vector<int64_t> i64 = {-(int64_t{1} << 62), 5};
  const std::vector<uint8_t> u8 = {0, 3, 255};
  return {
      // u8 first, so the F32 after it sits at an odd offset (exercises the copying read).
      {"bytes", Tensor::from_host(u8.data(), {3}, DType::U8)},
      {"weight", testing::random_tensor({2, 3, 4}, 11)},
      {"bias", testing::random_tensor({3}, 12, DType::F64)},
      {"scale", testing::random_tensor({}, 13)},
      {"empty", Tensor::empty({0}, TensorOptions(DType::F32))},
      {"empty.rows", Tensor::empty({2, 0, 3}, TensorOptions(DType::I64))},
      {"half", testing::random_tensor({2, 3}, 14).to(DType::F16)},
      {"bf16", testing::random_tensor({3, 2}, 15).to(DType::BF16)},
      {"ints", Tensor::from_host(i32.data(), {3}, DType::I32)},
      {"longs", Tensor::from_host(i64.data(), {2}, DType::I64)},
      // A non-contiguous view: written as its contiguous values.
      {"transposed", testing::random_tensor({3, 5}, 16).transpose(0, 1)},
  };
}

TEST_F(Safetensors, RoundTripsEveryDtypeByteForByte) {
  const auto tensors = one_tensor_per_dtype();
  const std::map<std::string, std::string> metadata = {{"config", R"({"hidden": 4})"},
                                                       {"note", "\u2713"}};
  const std::string target = path("model.safetensors");
  save_safetensors(target, tensors, metadata);

  SafetensorsFile file(target);
  ASSERT_EQ(file.names().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, original] = tensors[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(file.names()[i], name) << "header order should be the given order";
    const Tensor loaded = file.tensor(name);
    EXPECT_EQ(loaded.dtype(), original.dtype());
    EXPECT_EQ(loaded.shape(), original.shape());
    EXPECT_EQ(tensor_bytes(loaded), tensor_bytes(original));
  }
  EXPECT_EQ(file.metadata(), metadata);
  // The F32 after three U8 bytes is misaligned: still correct (copied).
  EXPECT_EQ(file.info("weight").begin, 3u);
  EXPECT_EQ(file.tensor("weight").to_float_vector(), tensors[1].second.to_float_vector());
}

TEST_F(Safetensors, WrittenHeaderIsSpacePaddedTo8BytesAndBufferIsPacked) {
  const auto tensors = one_tensor_per_dtype();
  const std::string target = path("model.safetensors");
  save_safetensors(target, tensors, {{"a", "b"}});
  const std::string bytes = read_bytes(target);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i)
    header_length = (header_length << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(header_length % 8, 0u);
  ASSERT_LE(8 + header_length, bytes.size());
  const std::string header = bytes.substr(8, header_length);
  EXPECT_EQ(header.front(), '{');
  const size_t last_brace = header.rfind('}');
  EXPECT_LT(header.size() - last_brace - 1, 8u);
  EXPECT_EQ(header.find_first_not_of(' ', last_brace + 1), std::string::npos) << "pad with spaces";
  // The buffer is the tensors' bytes back to back, in order, with nothing after them (the
  // Python library rejects gaps).
  std::string expected_buffer;
  for (const auto& [name, t] : tensors) expected_buffer += tensor_bytes(t);
  EXPECT_EQ(bytes.substr(8 + header_length), expected_buffer);
  // The header is what the Python library expects.
  const auto json = nlohmann::ordered_json::parse(header);
  EXPECT_EQ(json.begin().key(), "__metadata__");
  EXPECT_EQ(json["weight"]["dtype"], "F32");
  EXPECT_EQ(json["weight"]["shape"], nlohmann::ordered_json::array({2, 3, 4}));
  EXPECT_EQ(json["weight"]["data_offsets"], nlohmann::ordered_json::array({3, 99}));
  EXPECT_EQ(json["scale"]["shape"], nlohmann::ordered_json::array());
}

TEST_F(Safetensors, RewritesTheFixtureIdentically) {
  // Python file -> our reader -> our writer -> our reader gives the same tensors and metadata.
  SafetensorsFile python_file(kFixtureDir + "/reference.safetensors");
  const std::string target = path("copy.safetensors");
  save_safetensors(target, python_file.load_all(), python_file.metadata());
  SafetensorsFile ours(target);
  EXPECT_EQ(ours.names(), python_file.names());
  EXPECT_EQ(ours.metadata(), python_file.metadata());
  for (const auto& name : ours.names()) {
    SCOPED_TRACE(name);
    EXPECT_EQ(ours.info(name).shape, python_file.info(name).shape);
    EXPECT_EQ(tensor_bytes(ours.tensor(name)), tensor_bytes(python_file.tensor(name)));
  }
}

TEST_F(Safetensors, SaveReplacesAnExistingFileAndLeavesNoTemporaryFiles) {
  const std::string target = path("ckpt.safetensors");
  save_safetensors(target, {{"a", testing::random_tensor({4}, 1)}});
  const Tensor b = testing::random_tensor({2, 2}, 2);
  save_safetensors(target, {{"b", b}});
  SafetensorsFile file(target);
  EXPECT_EQ(file.names(), std::vector<std::string>{"b"});
  EXPECT_EQ(file.tensor("b").to_float_vector(), b.to_float_vector());
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"ckpt.safetensors"});
}

TEST_F(Safetensors, SaveWhileTheOldFileIsMappedKeepsOldTensorsValid) {
  const std::string target = path("ckpt.safetensors");
  const Tensor a = testing::random_tensor({8}, 3);
  save_safetensors(target, {{"w", a}});
  SafetensorsFile old_file(target);
  const Tensor old_w = old_file.tensor("w");
  save_safetensors(target, {{"w", testing::random_tensor({8}, 4)}});
  // rename() swapped in a new inode; the old mapping still shows the old data.
  EXPECT_EQ(old_w.to_float_vector(), a.to_float_vector());
}

TEST_F(Safetensors, FailedSaveThrowsAndLeavesTargetUntouched) {
  const Tensor t = testing::random_tensor({4}, 5);

  // Directory does not exist.
  const std::string missing_dir = path("no_such_dir/model.safetensors");
  try {
    save_safetensors(missing_dir, {{"t", t}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing_dir), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos)
        << e.what();
  }

  // The target is a (non-empty) directory: the rename fails, the directory survives.
  fs::create_directories(path("a_dir/child"));
  try {
    save_safetensors(path("a_dir"), {{"t", t}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path("a_dir")), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_directory(path("a_dir/child")));

  // Invalid input (duplicate names) fails before anything is written.
  const std::string target = path("model.safetensors");
  save_safetensors(target, {{"t", t}});
  const std::string before = read_bytes(target);
  EXPECT_THROW(save_safetensors(target, {{"t", t}, {"t", t}}), Error);
  EXPECT_THROW(save_safetensors(target, {{"__metadata__", t}}), Error);
  EXPECT_THROW(save_safetensors(target, {{"undefined", Tensor()}}), Error);
  EXPECT_EQ(read_bytes(target), before);
  EXPECT_EQ(dir_entries(), (std::vector<std::string>{"a_dir", "model.safetensors"}));
}

TEST_F(Safetensors, WriteFailureMidFileLeavesTargetUntouched) {
  // Simulate a full disk: a file-size limit makes write() fail with EFBIG part way through.
  const std::string target = path("model.safetensors");
  save_safetensors(target, {{"small", testing::random_tensor({4}, 6)}});
  const std::string before = read_bytes(target);

  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit small_limit = old_limit;
  small_limit.rlim_cur = 4096;
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small_limit), 0);
  std::string message;
  try {
    save_safetensors(target, {{"big", testing::random_tensor({64, 64}, 7)}});
  } catch (const Error& e) {
    message = e.what();
  }
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old_limit), 0);
  ::signal(SIGXFSZ, old_handler);

  EXPECT_NE(message.find(target), std::string::npos)
      << "expected an error naming the path, got: " << message;
  EXPECT_NE(message.find("File too large"), std::string::npos) << message;
  EXPECT_EQ(read_bytes(target), before);
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"model.safetensors"});
}

// ---- bad files: a clear error naming the file and the problem

const std::string kF32Entry = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
const std::string kEightBytes(8, '\x01');

TEST_F(Safetensors, RejectsEmptyFile) {
  EXPECT_TRUE(open_fails_with(write_file("empty.safetensors", ""), {"0 bytes", "too short"}));
}

TEST_F(Safetensors, RejectsMissingFileAndDirectory) {
  EXPECT_TRUE(open_fails_with(path("absent.safetensors"), {"cannot open", "No such file"}));
  fs::create_directories(path("dir.safetensors"));
  EXPECT_TRUE(open_fails_with(path("dir.safetensors"), {"not a regular file"}));
}

TEST_F(Safetensors, RejectsFileTruncatedInTheHeader) {
  const std::string full = read_bytes(kFixtureDir + "/reference.safetensors");
  EXPECT_TRUE(open_fails_with(write_file("short.safetensors", full.substr(0, 5)), {"too short"}));
  EXPECT_TRUE(open_fails_with(write_file("cut.safetensors", full.substr(0, 100)),
                              {"header length", "runs past the end of the file"}));
}

TEST_F(Safetensors, RejectsFileTruncatedInTheData) {
  const std::string full = read_bytes(kFixtureDir + "/reference.safetensors");
  EXPECT_TRUE(open_fails_with(write_file("cut.safetensors", full.substr(0, full.size() - 2)),
                              {"bool_flags", "run past the end", "data buffer"}));
}

TEST_F(Safetensors, RejectsHeaderLengthBeyondTheFile) {
  EXPECT_TRUE(open_fails_with(
      write_file("len.safetensors", safetensors_bytes(kF32Entry, kEightBytes, uint64_t{1} << 40)),
      {"header length 1099511627776", "runs past the end of the file"}));
  EXPECT_TRUE(open_fails_with(
      write_file("max.safetensors", safetensors_bytes(kF32Entry, kEightBytes, ~uint64_t{0})),
      {"runs past the end of the file"}));
}

TEST_F(Safetensors, RejectsInvalidJson) {
  EXPECT_TRUE(open_fails_with(
      write_file("json.safetensors", safetensors_bytes(R"({"w": {"dtype": "F32",)", "")),
      {"not valid JSON"}));
  EXPECT_TRUE(open_fails_with(write_file("zero.safetensors", safetensors_bytes("", kEightBytes)),
                              {"not valid JSON"}));
  EXPECT_TRUE(
      open_fails_with(write_file("utf8.safetensors", safetensors_bytes("{\"\xff\xfe\": 1}", "")),
                      {"not valid JSON"}));
}

TEST_F(Safetensors, RejectsMalformedHeaderStructure) {
  const auto check = [&](const std::string& header, const std::vector<std::string>& parts) {
    static int counter = 0;
    const std::string file = write_file("bad" + std::to_string(counter++) + ".safetensors",
                                        safetensors_bytes(header, kEightBytes));
    EXPECT_TRUE(open_fails_with(file, parts)) << header;
  };
  check("[1, 2]", {"must be a JSON object", "array"});
  check(R"({"w": 3})", {"tensor 'w'", "entry must be an object"});
  check(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})",
        {"tensor 'w'", "missing field \"dtype\""});
  check(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", {"missing field \"shape\""});
  check(R"({"w": {"dtype": "F32", "shape": [2]}})", {"missing field \"data_offsets\""});
  check(R"({"w": {"dtype": 1, "shape": [2], "data_offsets": [0, 8]}})",
        {"\"dtype\" must be a string"});
  check(R"({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})",
        {"\"shape\" must be an array"});
  check(R"({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}})",
        {"must hold integers"});
  check(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})",
        {"two non-negative integers"});
  check(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})",
        {"two non-negative integers"});
  check(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": "0-8"}})",
        {"two non-negative integers"});
  check(
      R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 8]}})",
      {"too many elements"});
  check(R"({"__metadata__": {"step": 3}})", {"__metadata__ value of \"step\"", "must be a string"});
  check(R"({"__metadata__": [1]})", {"__metadata__ must be an object"});
  check(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
        {"repeats the key \"w\""});
}

TEST_F(Safetensors, RejectsUnknownDtype) {
  const auto file = write_file(
      "dtype.safetensors",
      safetensors_bytes(R"({"fp8.weight":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})",
                        kEightBytes));
  EXPECT_TRUE(open_fails_with(file, {"tensor 'fp8.weight'", "unsupported dtype \"F8_E4M3\""}));
  const auto garbage = write_file(
      "garbage.safetensors",
      safetensors_bytes(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", kEightBytes));
  EXPECT_TRUE(open_fails_with(garbage, {"tensor 'w'", "unsupported dtype \"Q4\""}));
}

TEST_F(Safetensors, RejectsNegativeDimension) {
  const auto file = write_file(
      "neg.safetensors",
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", kEightBytes));
  EXPECT_TRUE(open_fails_with(file, {"tensor 'w'", "negative dimension"}));
}

TEST_F(Safetensors, RejectsOffsetsOutOfRange) {
  const auto past_end = write_file(
      "end.safetensors",
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", kEightBytes));
  EXPECT_TRUE(open_fails_with(past_end, {"tensor 'w'", "[4, 12]", "run past the end", "8-byte"}));
  const auto reversed = write_file(
      "rev.safetensors",
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", kEightBytes));
  EXPECT_TRUE(open_fails_with(reversed, {"tensor 'w'", "end before they begin"}));
  const auto huge = write_file(
      "huge.safetensors",
      safetensors_bytes(
          R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]}})",
          kEightBytes));
  EXPECT_TRUE(open_fails_with(huge, {"tensor 'w'", "run past the end"}));
}

TEST_F(Safetensors, RejectsOverlappingOffsets) {
  const auto file =
      write_file("overlap.safetensors",
                 safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                   std::string(12, '\x02')));
  EXPECT_TRUE(open_fails_with(file, {"'a'", "'b'", "overlap"}));
  // Gaps are allowed, and an empty tensor touches no bytes.
  const auto gaps =
      write_file("gaps.safetensors",
                 safetensors_bytes(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                   R"("e":{"dtype":"F32","shape":[0],"data_offsets":[1,1]},)"
                                   R"("b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})",
                                   std::string("\x01\x02\x00\x00\x00\x00\x03\x04", 8)));
  SafetensorsFile ok(gaps);
  EXPECT_EQ(ok.tensor("b").to_int_vector(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(ok.tensor("e").numel(), 0);
}

TEST_F(Safetensors, RejectsByteCountMismatch) {
  const auto file = write_file(
      "count.safetensors",
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", kEightBytes));
  EXPECT_TRUE(open_fails_with(file, {"tensor 'w'", "span 8 bytes", "F32[3] needs 12"}));
}

TEST_F(Safetensors, EveryTruncationAndHeaderCorruptionFailsCleanly) {
  // No input may crash the reader: every prefix of the fixture and many random header byte
  // corruptions either open (and then load) or throw distill::Error.
  const std::string full = read_bytes(kFixtureDir + "/reference.safetensors");
  // A fresh file per case: rewriting one file in place makes ext4 flush it on every close.
  int case_number = 0;
  const auto write_case = [&](const std::string& bytes) {
    const std::string name = "case" + std::to_string(case_number++) + ".safetensors";
    return write_file(name, bytes);
  };
  for (size_t length = 0; length < full.size(); ++length) {
    const std::string target = write_case(full.substr(0, length));
    EXPECT_THROW(SafetensorsFile file(target), Error) << "prefix of " << length << " bytes";
  }
  std::mt19937 rng(1234);
  ASSERT_GT(full.size(), 8u);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | static_cast<uint8_t>(full[i]);
  const size_t header_end = 8 + header_length;
  ASSERT_GT(full.size(), header_end);
  for (int trial = 0; trial < 300; ++trial) {
    std::string corrupted = full;
    const int flips = 1 + trial % 3;
    for (int f = 0; f < flips; ++f) corrupted[rng() % header_end] = static_cast<char>(rng() % 256);
    const std::string target = write_case(corrupted);
    try {
      SafetensorsFile file(target);
      for (const auto& [name, t] : file.load_all()) (void)tensor_bytes(t);
    } catch (const Error&) {
    }
  }
}

}  // namespace
}  // namespace distill
