#include "drivers/tree_diff.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "common/fs.h"
#include "common/path.h"

namespace lamina {
namespace {

Result<std::string> ReadLink(const std::string& path, size_t hint) {
  std::string target(hint + 1, '\0');
  for (;;) {
    ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
    if (n < 0) return FailErrno("readlink " + path);
    if (static_cast<size_t>(n) < target.size()) {
      target.resize(static_cast<size_t>(n));
      return target;
    }
    target.resize(target.size() * 2);
  }
}

Result<std::map<std::string, std::string>> Xattrs(const std::string& path) {
  std::map<std::string, std::string> out;
  auto names = ListXattrs(path);
  if (!names) {
    if (names.error().code() == ENOTSUP) return out;
    return Fail(names.error());
  }
  for (const auto& name : *names) {
    auto value = GetXattr(path, name);
    if (!value) {
      if (value.error().code() == ENODATA) continue;
      return Fail(value.error());
    }
    out.emplace(name, std::move(*value));
  }
  return out;
}

class Differ {
 public:
  Differ(std::string old_root, std::string new_root, const TreeDiffOptions& options)
      : old_root_(std::move(old_root)), new_root_(std::move(new_root)), options_(options) {}

  Result<std::vector<Change>> Run() {
    if (old_root_.empty()) {
      LAMINA_CHECK(AddAll(""));
    } else {
      LAMINA_CHECK(CompareDirs(""));
      AddParents();
    }
    std::sort(changes_.begin(), changes_.end(),
              [](const Change& a, const Change& b) { return a.path < b.path; });
    return std::move(changes_);
  }

 private:
  static std::string Under(const std::string& root, const std::string& rel) {
    return rel.empty() ? root : root + "/" + rel;
  }

  // Lists everything below the new tree's directory `rel` as Added.
  Result<void> AddAll(const std::string& rel) {
    std::string dir = Under(new_root_, rel);
    auto names = ListDir(dir);
    if (!names) return Fail(names.error().Wrap("list " + dir));
    for (const auto& name : *names) {
      std::string child = JoinPath(rel, name);
      changes_.push_back({child, ChangeKind::kAdded});
      struct stat st;
      if (::lstat(Under(new_root_, child).c_str(), &st) != 0) {
        return FailErrno("stat " + Under(new_root_, child));
      }
      if (S_ISDIR(st.st_mode)) LAMINA_CHECK(AddAll(child));
    }
    return {};
  }

  Result<bool> Differs(const std::string& rel, const struct stat& a, const struct stat& b) {
    if ((a.st_mode & S_IFMT) != (b.st_mode & S_IFMT)) return true;
    if ((a.st_mode & 07777) != (b.st_mode & 07777)) return true;
    if (a.st_uid != b.st_uid || a.st_gid != b.st_gid) return true;
    if (a.st_mtim.tv_sec != b.st_mtim.tv_sec || a.st_mtim.tv_nsec != b.st_mtim.tv_nsec) return true;
    if (!S_ISDIR(a.st_mode) && a.st_size != b.st_size) return true;
    if ((S_ISCHR(a.st_mode) || S_ISBLK(a.st_mode)) && a.st_rdev != b.st_rdev) return true;
    if (S_ISLNK(a.st_mode)) {
      auto ta = LAMINA_TRY(ReadLink(Under(old_root_, rel), static_cast<size_t>(a.st_size)));
      auto tb = LAMINA_TRY(ReadLink(Under(new_root_, rel), static_cast<size_t>(b.st_size)));
      if (ta != tb) return true;
    }
    if (options_.xattrs) {
      auto xa = LAMINA_TRY(Xattrs(Under(old_root_, rel)));
      auto xb = LAMINA_TRY(Xattrs(Under(new_root_, rel)));
      if (xa != xb) return true;
    }
    return false;
  }

  // Compares the children of directory `rel` (a directory in both trees).
  Result<void> CompareDirs(const std::string& rel) {
    std::string old_dir = Under(old_root_, rel);
    std::string new_dir = Under(new_root_, rel);
    auto old_names = ListDir(old_dir);
    if (!old_names) return Fail(old_names.error().Wrap("list " + old_dir));
    auto new_names = ListDir(new_dir);
    if (!new_names) return Fail(new_names.error().Wrap("list " + new_dir));
    size_t at_entry = changes_.size();

    auto io = old_names->begin();
    auto in = new_names->begin();
    while (io != old_names->end() || in != new_names->end()) {
      if (in == new_names->end() || (io != old_names->end() && *io < *in)) {
        changes_.push_back({JoinPath(rel, *io), ChangeKind::kDeleted});
        ++io;
        continue;
      }
      std::string child = JoinPath(rel, *in);
      struct stat nst;
      if (::lstat(Under(new_root_, child).c_str(), &nst) != 0) {
        return FailErrno("stat " + Under(new_root_, child));
      }
      if (io == old_names->end() || *in < *io) {
        changes_.push_back({child, ChangeKind::kAdded});
        if (S_ISDIR(nst.st_mode)) LAMINA_CHECK(AddAll(child));
        ++in;
        continue;
      }
      struct stat ost;
      if (::lstat(Under(old_root_, child).c_str(), &ost) != 0) {
        return FailErrno("stat " + Under(old_root_, child));
      }
      if (LAMINA_TRY(Differs(child, ost, nst))) changes_.push_back({child, ChangeKind::kModified});
      if (S_ISDIR(nst.st_mode)) {
        if (S_ISDIR(ost.st_mode)) {
          LAMINA_CHECK(CompareDirs(child));
        } else {
          LAMINA_CHECK(AddAll(child));
        }
      }
      ++io;
      ++in;
    }
    // A directory with changes below it is Modified itself (unless it is
    // the root, or already listed by the caller's comparison).
    if (options_.parent_dirs && !rel.empty() && changes_.size() > at_entry) {
      parent_candidates_.push_back(rel);
    }
    return {};
  }

  // Adds the directories holding changes that were not listed already.
  void AddParents() {
    if (parent_candidates_.empty()) return;
    std::map<std::string, bool> listed;
    for (const auto& c : changes_) listed[c.path] = true;
    for (const auto& dir : parent_candidates_) {
      if (!listed.contains(dir)) changes_.push_back({dir, ChangeKind::kModified});
    }
  }

  std::string old_root_;
  std::string new_root_;
  const TreeDiffOptions& options_;
  std::vector<Change> changes_;
  std::vector<std::string> parent_candidates_;
};

}  // namespace

Result<std::vector<Change>> DiffTrees(const std::string& old_root, const std::string& new_root,
                                      const TreeDiffOptions& options) {
  Differ differ(old_root, new_root, options);
  return differ.Run();
}

}  // namespace lamina
