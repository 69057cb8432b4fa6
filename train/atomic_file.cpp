#include "train/atomic_file.h"

#include "core/file_io.h"

namespace distill::train {

void write_file_atomically(const std::string& path, const std::string& contents) {
  AtomicFileWriter out(path, "write_file_atomically");
  out.write(contents);
  out.commit();
}

}  // namespace distill::train
