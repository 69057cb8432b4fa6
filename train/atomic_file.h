// Durable atomic replacement of small files (latest.json, summary.json, a rewound
// metrics.jsonl); checkpoints themselves go through save_safetensors, which does the same.
#pragma once

#include <string>

namespace distill::train {

// Replaces `path` with `contents` atomically and durably (core/file_io.h AtomicFileWriter):
// temporary file in the same directory, fsync, rename, fsync of the directory. Throws naming the
// path and the system error (a full disk says so); on failure the old file is untouched and the
// temporary file removed.
void write_file_atomically(const std::string& path, const std::string& contents);

}  // namespace distill::train
