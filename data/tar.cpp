#include "data/tar.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace distill::data {

namespace {

constexpr uint64_t kBlock = 512;
constexpr size_t kShortSkip = 16384;

uint64_t round_up_block(uint64_t n) {
  return (n + kBlock - 1) / kBlock * kBlock;
}

std::string field_string(const uint8_t* p, size_t n) {
  const auto* c = reinterpret_cast<const char*>(p);
  return std::string(c, strnlen(c, n));
}

// Octal (space/NUL terminated) or GNU base-256 (high bit set) numbers.
bool parse_number(const uint8_t* p, size_t n, uint64_t& out) {
  out = 0;
  if (p[0] & 0x80) {
    for (size_t i = 1; i < n; ++i) out = (out << 8) | p[i];
    return true;
  }
  size_t i = 0;
  while (i < n && p[i] == ' ') ++i;
  bool any = false;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i, any = true) out = out * 8 + (p[i] - '0');
  for (; i < n; ++i)
    if (p[i] != ' ' && p[i] != 0) return false;
  return any;
}

bool checksum_ok(const uint8_t* h) {
  uint64_t stored = 0;
  if (!parse_number(h + 148, 8, stored)) return false;
  uint64_t sum = 0;
  for (uint64_t i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : h[i];
  return sum == stored;
}

// The `path` record of a pax extended header ("<len> path=<name>\n" records).
std::string pax_path(const std::string& data) {
  size_t pos = 0;
  while (pos < data.size()) {
    const size_t space = data.find(' ', pos);
    if (space == std::string::npos) break;
    const size_t len = std::strtoull(data.c_str() + pos, nullptr, 10);
    if (len == 0 || pos + len > data.size()) break;
    const std::string record = data.substr(space + 1, pos + len - space - 2);
    if (record.rfind("path=", 0) == 0) return record.substr(5);
    pos += len;
  }
  return "";
}

}  // namespace

TarReader::TarReader(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "rb");
  if (!file_) fail(path, ": cannot open (", std::strerror(errno), ")");
  struct stat st {};
  if (fstat(fileno(file_), &st) != 0) {
    std::fclose(file_);
    fail(path, ": cannot stat (", std::strerror(errno), ")");
  }
  file_size_ = static_cast<uint64_t>(st.st_size);
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 18);
}

TarReader::~TarReader() {
  if (file_) std::fclose(file_);
}

void TarReader::seek(uint64_t offset) {
  if (offset == pos_) return;
  // Short forward skips (small members such as 1 KB CIFAR images) read through the stream's
  // buffer: an fseek would drop the buffer and refill it from the same place.
  if (offset > pos_ && offset - pos_ <= kShortSkip) {
    uint8_t scratch[kShortSkip];
    const size_t want = static_cast<size_t>(offset - pos_);
    const size_t n = std::fread(scratch, 1, want, file_);
    pos_ += n;
    DISTILL_CHECK(n == want, path_, ": truncated tar: cannot skip to offset ", offset);
    return;
  }
  if (fseeko(file_, static_cast<off_t>(offset), SEEK_SET) != 0)
    fail(path_, ": cannot seek to offset ", offset);
  pos_ = offset;
}

bool TarReader::read_block(uint8_t* block, uint64_t offset) {
  seek(offset);
  const size_t n = std::fread(block, 1, kBlock, file_);
  pos_ += n;
  if (n == 0) return false;
  DISTILL_CHECK(n == kBlock, path_, ": truncated tar: the header at offset ", offset, " has only ",
                n, " of 512 bytes");
  return true;
}

bool TarReader::next(TarMember& member) {
  // Continue after the previous member's data, read or not.
  uint64_t offset = current_.data_offset + round_up_block(current_.size);
  std::string long_name;
  uint64_t header_offset = offset;
  bool have_long_name = false;
  uint8_t h[kBlock];
  for (;;) {
    if (!read_block(h, offset)) return false;  // end of file on a block boundary
    if (std::all_of(h, h + kBlock, [](uint8_t b) { return b == 0; })) return false;
    DISTILL_CHECK(checksum_ok(h), path_, ": corrupt tar header at offset ", offset,
                  " (bad checksum; not a tar file, or damaged)");
    uint64_t size = 0;
    DISTILL_CHECK(parse_number(h + 124, 12, size), path_, ": corrupt tar header at offset ", offset,
                  " (bad size field)");
    const uint64_t data_offset = offset + kBlock;
    std::string name = field_string(h, 100);
    if (std::memcmp(h + 257, "ustar", 5) == 0) {
      const std::string prefix = field_string(h + 345, 155);
      if (!prefix.empty()) name = prefix + "/" + name;
    }
    if (have_long_name) name = long_name;
    // Compared without adding: a base-256 size near 2^64 would wrap data_offset + size around.
    DISTILL_CHECK(size <= file_size_ - std::min(file_size_, data_offset), path_,
                  ": truncated tar: member '", name, "' at offset ", offset, " needs ", size,
                  " bytes of data, only ", file_size_ - std::min(file_size_, data_offset),
                  " remain");
    const char type = static_cast<char>(h[156]);
    if (type == 'L' || type == 'x') {
      // GNU long name or pax header: its data names the next member.
      std::string data(size, '\0');
      seek(data_offset);
      DISTILL_CHECK(std::fread(data.data(), 1, size, file_) == size, path_,
                    ": read error at offset ", data_offset);
      pos_ += size;
      if (type == 'L') {
        long_name = data.substr(0, strnlen(data.c_str(), data.size()));
        have_long_name = true;
      } else {
        const std::string p = pax_path(data);
        if (!p.empty()) {
          long_name = p;
          have_long_name = true;
        }
      }
      offset = data_offset + round_up_block(size);
      continue;
    }
    if (type == '0' || type == '\0' || type == '7') {
      current_ = {name, header_offset, data_offset, size};
      current_read_ = false;
      member = current_;
      return true;
    }
    // Directories, links, global pax headers and the rest: skip.
    offset = data_offset + round_up_block(size);
    header_offset = offset;
    have_long_name = false;
  }
}

std::vector<uint8_t> TarReader::read_data() {
  DISTILL_CHECK(!current_read_, path_, ": read_data() called twice for member '", current_.name,
                "'");
  current_read_ = true;
  std::vector<uint8_t> data(current_.size);
  seek(current_.data_offset);
  const size_t n = std::fread(data.data(), 1, data.size(), file_);
  pos_ += n;
  DISTILL_CHECK(n == data.size(), path_, ": truncated tar: member '", current_.name, "' at offset ",
                current_.header_offset, " has ", n, " of ", data.size(), " bytes");
  return data;
}

namespace {
void append_header(std::vector<uint8_t>& out, const std::string& name, uint64_t size, char type) {
  uint8_t h[kBlock] = {};
  std::memcpy(h, name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(reinterpret_cast<char*>(h + 100), 8, "%07o", 0644);
  std::snprintf(reinterpret_cast<char*>(h + 108), 8, "%07o", 0);
  std::snprintf(reinterpret_cast<char*>(h + 116), 8, "%07o", 0);
  std::snprintf(reinterpret_cast<char*>(h + 124), 12, "%011llo",
                static_cast<unsigned long long>(size));
  std::snprintf(reinterpret_cast<char*>(h + 136), 12, "%011o", 0);
  h[156] = static_cast<uint8_t>(type);
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (uint8_t b : h) sum += b;
  std::snprintf(reinterpret_cast<char*>(h + 148), 8, "%06o", sum);
  h[155] = ' ';
  out.insert(out.end(), h, h + kBlock);
}
}  // namespace

void TarWriter::add(const std::string& name, const std::vector<uint8_t>& data) {
  DISTILL_CHECK(!name.empty(), "TarWriter: empty member name");
  if (name.size() > 100) {
    // GNU long name: a ././@LongLink member holding the name precedes the real header.
    append_header(bytes_, "././@LongLink", name.size() + 1, 'L');
    bytes_.insert(bytes_.end(), name.begin(), name.end());
    bytes_.push_back(0);
    bytes_.resize(round_up_block(bytes_.size()), 0);
  }
  append_header(bytes_, name, data.size(), '0');
  bytes_.insert(bytes_.end(), data.begin(), data.end());
  bytes_.resize(round_up_block(bytes_.size()), 0);
}

void TarWriter::add(const std::string& name, const std::string& data) {
  add(name, std::vector<uint8_t>(data.begin(), data.end()));
}

std::vector<uint8_t> TarWriter::finish() const {
  std::vector<uint8_t> out = bytes_;
  out.resize(out.size() + 2 * kBlock, 0);
  return out;
}

void TarWriter::write(const std::string& path) const {
  const auto bytes = finish();
  std::ofstream out(path, std::ios::binary);
  DISTILL_CHECK(out.good(), path, ": cannot open for writing");
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  DISTILL_CHECK(out.good(), path, ": write error");
}

}  // namespace distill::data
