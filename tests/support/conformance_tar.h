#pragma once

// Small OCI layer tars made in a test, for building layer stacks through
// Driver::ApplyDiff (so whiteouts and opaque dirs end up in each driver's
// own format).

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"

namespace lamina::test {

struct TarItem {
  enum class Type { kFile, kDir, kSymlink, kHardlink };
  std::string path;  // relative; `DIR/.wh.NAME` and `DIR/.wh..wh..opq` are OCI whiteouts
  Type type = Type::kFile;
  std::string content;  // file data
  std::string target;   // symlink target, or hard link target path
  mode_t mode = 0644;   // permission bits (and suid/sgid/sticky)
  uid_t uid = 0;
  gid_t gid = 0;
  int64_t mtime = 1700000000;
  std::map<std::string, std::string> xattrs;
};

// Shorthands.
TarItem TarFile(std::string path, std::string content, mode_t mode = 0644);
TarItem TarDir(std::string path, mode_t mode = 0755);
TarItem TarSymlink(std::string path, std::string target);
TarItem TarHardlink(std::string path, std::string target);
TarItem TarWhiteout(const std::string& path);  // deletes `path` from lower layers
TarItem TarOpaque(const std::string& dir);      // `dir/.wh..wh..opq`

// Writes a plain (ustar/pax) tar of `items`, in order, into a fresh anonymous
// file and returns it positioned at offset 0.
Result<Fd> MakeTar(const std::vector<TarItem>& items);

}  // namespace lamina::test
