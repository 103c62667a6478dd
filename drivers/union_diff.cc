// Change detection on a union-format upper directory (see drivers/tar.h).

#include "drivers/tar.h"

namespace lamina {

Result<std::vector<DiffEntry>> UnionDiffEntries(const std::string& /*upper*/) {
  return Fail(ENOSYS, "UnionDiffEntries: not yet");
}

Result<std::vector<Change>> UnionChanges(const std::string& /*upper*/,
                                         const std::vector<std::string>& /*lowers*/) {
  return Fail(ENOSYS, "UnionChanges: not yet");
}

}  // namespace lamina

namespace lamina {

Result<std::vector<DiffEntry>> UnionDiffEntries(const std::string& /*upper*/,
                                                const std::vector<std::string>& /*lowers*/) {
  return Fail(ENOSYS, "UnionDiffEntries: not yet");
}

}  // namespace lamina
