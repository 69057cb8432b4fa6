// A streaming reader for POSIX tar archives (ustar, GNU long names, pax `path` records): members
// are read in order straight from the file, nothing is extracted. Truncation and corrupt headers
// are errors naming the archive, the member and its offset.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace distill::data {

struct TarMember {
  std::string name;
  uint64_t header_offset = 0;  // where the member's (first) header block starts
  uint64_t data_offset = 0;    // where its data starts
  uint64_t size = 0;
};

class TarReader {
 public:
  explicit TarReader(const std::string& path);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  // Advances to the next regular file (skipping directories, links and the unread data of the
  // previous member). Returns false at the end of the archive.
  bool next(TarMember& member);
  // The data of the member next() returned last (call at most once per member).
  std::vector<uint8_t> read_data();
  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }

 private:
  bool read_block(uint8_t* block, uint64_t offset);  // false at a clean end of file
  void seek(uint64_t offset);

  std::string path_;
  FILE* file_ = nullptr;
  uint64_t file_size_ = 0;
  uint64_t pos_ = 0;  // file position of the stream
  TarMember current_;
  bool current_read_ = true;
};

// Builds a tar archive in memory (regular files, ustar headers, GNU long names past 100 bytes).
// For tests and tools that write shards.
class TarWriter {
 public:
  void add(const std::string& name, const std::vector<uint8_t>& data);
  void add(const std::string& name, const std::string& data);
  // The archive with its end-of-archive blocks.
  std::vector<uint8_t> finish() const;
  void write(const std::string& path) const;

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace distill::data
