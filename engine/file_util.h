// Reading small files (configs, indexes, tokenizer models) with errors that
// name the path. Large tensors are never read this way: see weights.h (mmap).
#ifndef MEMSERVE_ENGINE_FILE_UTIL_H_
#define MEMSERVE_ENGINE_FILE_UTIL_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"

namespace memserve {

// Reads the whole regular file `path` into *out if it is at most `limit`
// bytes. Errors: NotFound (no such file), DataLoss (not a regular file, or
// larger than `limit`), Unavailable (cannot open/read); each names the path.
absl::Status ReadSmallFile(const std::string& path, size_t limit, std::string* out);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_FILE_UTIL_H_
