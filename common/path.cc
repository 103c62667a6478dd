#include "common/path.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace lamina {

Result<Fd> OpenAt2(int dirfd, const std::string& path, int flags, mode_t mode, uint64_t resolve) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  // openat2 rejects a mode without O_CREAT/O_TMPFILE.
  how.mode = (flags & (O_CREAT | __O_TMPFILE)) ? mode : 0;
  how.resolve = resolve;
  for (;;) {
    long fd = ::syscall(SYS_openat2, dirfd, path.empty() ? "." : path.c_str(), &how, sizeof(how));
    if (fd >= 0) return Fd(static_cast<int>(fd));
    if (errno == EAGAIN) continue;  // a rename raced with RESOLVE_*; retry.
    return FailErrno("open " + path);
  }
}

Result<Fd> OpenInRoot(int root, const std::string& path, int flags, mode_t mode) {
  return OpenAt2(root, path, flags, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
}

Result<Fd> OpenBeneath(int root, const std::string& path, int flags, mode_t mode) {
  return OpenAt2(root, path, flags, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
}

Result<std::string> CleanRelativePath(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) {
    return Fail(EINVAL, "path holds a NUL byte");
  }
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (parts.empty()) return Fail(EINVAL, "path climbs out of its root: " + std::string(path));
      parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  std::string out;
  for (auto part : parts) {
    if (!out.empty()) out += '/';
    out += part;
  }
  return out;
}

std::pair<std::string, std::string> SplitParent(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return {"", std::string(path)};
  return {std::string(path.substr(0, slash)), std::string(path.substr(slash + 1))};
}

std::string JoinPath(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  std::string out(a);
  if (out.back() != '/') out += '/';
  while (!b.empty() && b.front() == '/') b.remove_prefix(1);
  out += b;
  return out;
}

std::vector<std::string> SplitComponents(std::string_view path) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > pos) out.emplace_back(path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  return out;
}

}  // namespace lamina
