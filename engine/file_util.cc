#include "engine/file_util.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace memserve {

absl::Status ReadSmallFile(const std::string& path, size_t limit, std::string* out) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return absl::ErrnoToStatus(err, path);
  }
  if (!S_ISREG(st.st_mode)) return absl::DataLossError(absl::StrCat(path, ": not a regular file"));
  if (static_cast<uint64_t>(st.st_size) > limit) {
    return absl::DataLossError(
        absl::StrCat(path, ": ", st.st_size, " bytes exceeds the ", limit, "-byte limit"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::UnavailableError(absl::StrCat(path, ": cannot open for reading"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::UnavailableError(absl::StrCat(path, ": read error"));
  *out = ss.str();
  return absl::OkStatus();
}

}  // namespace memserve
