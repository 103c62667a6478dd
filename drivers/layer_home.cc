#include "drivers/layer_home.h"

#include <sys/file.h>
#include <unistd.h>
#include <sys/stat.h>

#include <climits>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "common/fs.h"
#include "common/path.h"
#include "common/scope_guard.h"

namespace lamina {

Result<void> ValidateLayerId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 128 && id.front() != '.' && id.front() != '-';
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-')) {
      ok = false;
    }
  }
  if (!ok) {
    return Fail(EINVAL, "bad layer id '" + id +
                            "' (1-128 of A-Z a-z 0-9 _ . -, not starting with . or -)");
  }
  return {};
}

bool LayerHome::Exists(const std::string& id) const {
  if (!ValidateLayerId(id)) return false;
  return PathExists(DiffDir(id));
}

Result<void> LayerHome::CreateDirs(const std::string& id, const std::string& parent,
                                   bool writable) {
  LAMINA_CHECK(ValidateLayerId(id));
  if (!parent.empty()) {
    LAMINA_CHECK(ValidateLayerId(parent));
    if (!Exists(parent)) return Fail(ENOENT, "parent layer " + parent);
  }
  std::string dir = Dir(id);
  if (::mkdir(dir.c_str(), 0700) != 0) return FailErrno("create layer " + id);
  auto undo = Defer([&] { (void)RemoveTree(dir); });
  if (::mkdir(DiffDir(id).c_str(), 0755) != 0) return FailErrno("mkdir " + DiffDir(id));
  if (writable) {
    if (::mkdir(WorkDir(id).c_str(), 0700) != 0) return FailErrno("mkdir " + WorkDir(id));
    if (::mkdir(MergedDir(id).c_str(), 0755) != 0) return FailErrno("mkdir " + MergedDir(id));
  }
  LAMINA_CHECK(WriteFileAtomic(dir + "/parent", parent + "\n", 0600));
  undo.Dismiss();
  return {};
}

Result<std::string> LayerHome::Parent(const std::string& id) const {
  LAMINA_CHECK(ValidateLayerId(id));
  std::string text = LAMINA_TRY(ReadFile(Dir(id) + "/parent"));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (!text.empty()) LAMINA_CHECK(ValidateLayerId(text));
  return text;
}

Result<std::vector<std::string>> LayerHome::Chain(const std::string& id) const {
  std::vector<std::string> chain;
  std::unordered_set<std::string> seen;
  std::string cur = id;
  while (!cur.empty()) {
    if (!seen.insert(cur).second) return Fail(ELOOP, "layer parent chain loops at " + cur);
    if (!Exists(cur)) return Fail(ENOENT, "layer " + cur);
    chain.push_back(cur);
    cur = LAMINA_TRY(Parent(cur));
  }
  return chain;
}

Result<MountRefs> MountRefs::Lock(const LayerHome& home, const std::string& id) {
  LAMINA_CHECK(ValidateLayerId(id));
  std::string dir = home.Dir(id);
  Fd lock = LAMINA_TRY(Open(dir + "/mounts.lock", O_RDWR | O_CREAT, 0600));
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return FailErrno("lock " + dir + "/mounts.lock");
  }
  std::string path = dir + "/mounts";
  int count = 0;
  if (auto text = ReadFile(path)) {
    count = std::atoi(text->c_str());
  } else if (text.error().code() != ENOENT) {
    return Fail(text.error());
  }
  return MountRefs(std::move(lock), std::move(path), count < 0 ? 0 : count);
}

Result<void> MountRefs::Set(int count) {
  count_ = count;
  if (count == 0) {
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT) return FailErrno("unlink " + path_);
    return {};
  }
  return WriteFileAtomic(path_, std::to_string(count) + "\n", 0600);
}

// Undoes the octal escapes (\040 for space, ...) of /proc/self/mountinfo.
static std::string UnescapeMountField(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      int v = (field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0');
      out += static_cast<char>(v);
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

Result<bool> IsMountPoint(const std::string& path) {
  // Resolve the parent only: the mount point itself may be a dead FUSE mount
  // that answers ENOTCONN to every lookup.
  auto [dir, base] = SplitParent(path);
  if (dir.empty()) dir = path.starts_with('/') ? "/" : ".";
  char real_dir[PATH_MAX];
  if (::realpath(dir.c_str(), real_dir) == nullptr) {
    if (errno == ENOENT) return false;
    return FailErrno("realpath " + dir);
  }
  std::string real = JoinPath(real_dir, base);
  std::ifstream info("/proc/self/mountinfo");
  if (!info) return Fail(EIO, "read /proc/self/mountinfo");
  std::string line;
  while (std::getline(info, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    if (UnescapeMountField(mount_point) == real) return true;
  }
  return false;
}

}  // namespace lamina
