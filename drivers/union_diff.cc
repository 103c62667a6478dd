// Change detection on a union-format upper directory (see drivers/tar.h).
//
// A small model of overlayfs lookup over a stack of layer directories
// (`roots_[0]` on top): whiteouts (0/0 char devices or `.wh.NAME` files) end
// a lookup, opaque directories stop it from going lower, and a redirect
// xattr on a directory makes the layers below it be searched at another
// path (relative: another name in the same parent; absolute: from the layer
// roots), as Documentation/filesystems/overlayfs.rst describes.
// Layer directories are lamina's own (trusted) paths; redirect values are
// cleaned so that they cannot lead outside a layer.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "common/path.h"
#include "drivers/format.h"
#include "drivers/tar.h"

namespace lamina {
namespace {

// An object at `path` (relative) in layer `layer`.
struct Loc {
  size_t layer = 0;
  std::string path;
};

struct Lookup {
  std::vector<Loc> dirs;       // a directory: the layers that make it up, top first
  std::optional<Loc> nondir;   // a file, symlink, device... (the top one)
  bool found() const { return nondir.has_value() || !dirs.empty(); }
};

class Stack {
 public:
  explicit Stack(std::vector<std::string> roots) : roots_(std::move(roots)) {}

  std::string Abs(const Loc& loc) const { return JoinPath(roots_[loc.layer], loc.path); }

  // The root directory made of layers [from, end).
  std::vector<Loc> Root(size_t from = 0) const {
    std::vector<Loc> out;
    for (size_t i = from; i < roots_.size(); ++i) out.push_back({i, ""});
    return out;
  }

  Result<bool> IsWhiteout(const Loc& parent, const std::string& name) const {
    std::string marker = JoinPath(Abs(parent), std::string(kWhiteoutPrefix) + name);
    auto st = LAMINA_TRY(LstatIfExists(marker));
    if (st) return true;
    auto obj = LAMINA_TRY(LstatIfExists(JoinPath(Abs(parent), name)));
    return obj && IsWhiteoutStat(*obj);
  }

  Result<std::optional<std::string>> Redirect(const std::string& abs) const {
    for (auto ns : {XattrNamespace::kTrusted, XattrNamespace::kUser}) {
      auto value = GetXattr(abs, RedirectXattr(ns));
      if (value) return std::optional<std::string>(*value);
      int code = value.error().code();
      if (code != ENODATA && code != ENOTSUP && code != EPERM) {
        return Fail(value.error().Wrap("redirect of " + abs));
      }
    }
    return std::optional<std::string>();
  }

  Result<bool> Opaque(const std::string& abs) const {
    Fd fd = LAMINA_TRY(Open(abs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    return IsOpaqueDir(fd.get());
  }

  // Looks `name` up in the directory made of `parent` (top first).
  Result<Lookup> Find(const std::vector<Loc>& parent, const std::string& name) const {
    Lookup out;
    std::vector<Loc> candidates = parent;
    std::string lookup = name;
    bool absolute = false;
    for (size_t idx = 0; idx < candidates.size(); ++idx) {
      const Loc& at = candidates[idx];
      Loc loc{at.layer, absolute ? lookup : JoinPath(at.path, lookup)};
      auto [dir, base] = SplitParent(loc.path);
      if (LAMINA_TRY(IsWhiteout({at.layer, dir}, base))) break;
      auto st = LAMINA_TRY(LstatIfExists(Abs(loc)));
      if (!st) continue;
      if (!S_ISDIR(st->st_mode)) {
        if (out.dirs.empty()) out.nondir = loc;
        break;
      }
      out.dirs.push_back(loc);
      if (LAMINA_TRY(Opaque(Abs(loc)))) break;
      auto redirect = LAMINA_TRY(Redirect(Abs(loc)));
      if (!redirect) continue;
      auto clean = CleanRelativePath(*redirect);
      if (!clean || clean->empty()) {
        return Fail(EINVAL, "bad redirect '" + *redirect + "' on " + Abs(loc));
      }
      if (redirect->starts_with("/")) {
        // Absolute: the layers below are searched from their roots.
        absolute = true;
        lookup = *clean;
        std::vector<Loc> rest(candidates.begin(), candidates.begin() + idx + 1);
        for (size_t i = loc.layer + 1; i < roots_.size(); ++i) rest.push_back({i, ""});
        candidates = std::move(rest);
      } else {
        if (clean->find('/') != std::string::npos) {
          return Fail(EINVAL, "bad relative redirect '" + *redirect + "' on " + Abs(loc));
        }
        lookup = *clean;
      }
    }
    return out;
  }

  // The names visible in the directory made of `dirs`, sorted.
  Result<std::vector<std::string>> Names(const std::vector<Loc>& dirs) const {
    std::set<std::string> seen;
    std::vector<std::string> visible;
    for (const auto& loc : dirs) {
      auto names = LAMINA_TRY(ListDir(Abs(loc)));
      for (const auto& n : names) {
        if (n.starts_with(kWhiteoutMetaPrefix)) continue;
        if (IsWhiteoutName(n)) {
          seen.insert(std::string(WhiteoutTarget(n)));
          continue;
        }
        if (!seen.insert(n).second) continue;
        auto st = LAMINA_TRY(LstatIfExists(JoinPath(Abs(loc), n)));
        if (st && IsWhiteoutStat(*st)) continue;
        // A `.wh.NAME` beside it in the same layer hides it too.
        auto marker = LAMINA_TRY(
            LstatIfExists(JoinPath(Abs(loc), std::string(kWhiteoutPrefix) + n)));
        if (marker) continue;
        visible.push_back(n);
      }
    }
    std::sort(visible.begin(), visible.end());
    return visible;
  }

  // Lookup of a whole relative path from the root of layers [from, end).
  Result<Lookup> Resolve(const std::string& path, size_t from) const {
    Lookup cur;
    cur.dirs = Root(from);
    for (const auto& comp : SplitComponents(path)) {
      if (cur.dirs.empty()) return Lookup{};
      cur = LAMINA_TRY(Find(cur.dirs, comp));
    }
    return cur;
  }

 private:
  std::vector<std::string> roots_;
};

// A metacopy upper file (kernel metacopy=on) holds only metadata, its data
// stays in a lower file: writing it as is would lose the data.
Result<void> RefuseMetacopy(const std::string& abs, const std::string& path) {
  for (auto ns : {XattrNamespace::kTrusted, XattrNamespace::kUser}) {
    std::string name = OverlayXattrPrefix(ns) + "metacopy";
    if (::lgetxattr(abs.c_str(), name.c_str(), nullptr, 0) >= 0) {
      return Fail(ENOTSUP, path + " is a metacopy-only upper file (" + name +
                               "): layers written with metacopy=on cannot be diffed");
    }
  }
  return {};
}

// Emits the merged content below `path` (made of `dirs`), recursively, each
// entry with its source (empty for the upper, layer 0).
Result<void> EmitMerged(const Stack& stack, const std::string& path, const std::vector<Loc>& dirs,
                        std::vector<DiffEntry>* out) {
  auto names = LAMINA_TRY(stack.Names(dirs));
  for (const auto& name : names) {
    std::string child = JoinPath(path, name);
    Lookup found = LAMINA_TRY(stack.Find(dirs, name));
    if (!found.found()) continue;
    const Loc& top = found.nondir ? *found.nondir : found.dirs.front();
    if (found.nondir && top.layer == 0) LAMINA_CHECK(RefuseMetacopy(stack.Abs(top), child));
    out->push_back({child, DiffEntry::Kind::kContent, top.layer == 0 ? "" : stack.Abs(top)});
    if (!found.dirs.empty()) LAMINA_CHECK(EmitMerged(stack, child, found.dirs, out));
  }
  return {};
}

// One upper directory entry, classified.
struct UpperItem {
  enum class Kind { kWhiteout, kContent, kSkip } kind;
  std::string path;  // the path it is about (the whiteout's target for kWhiteout)
  bool is_dir = false;
};

Result<UpperItem> Classify(const std::string& upper, const std::string& dir,
                           const std::string& name) {
  std::string path = JoinPath(dir, name);
  if (name.starts_with(kWhiteoutMetaPrefix)) return UpperItem{UpperItem::Kind::kSkip, path};
  if (IsWhiteoutName(name)) {
    return UpperItem{UpperItem::Kind::kWhiteout, JoinPath(dir, WhiteoutTarget(name))};
  }
  struct stat st;
  if (::lstat(JoinPath(upper, path).c_str(), &st) != 0) return FailErrno("stat " + path);
  if (IsWhiteoutStat(st)) return UpperItem{UpperItem::Kind::kWhiteout, path};
  return UpperItem{UpperItem::Kind::kContent, path, S_ISDIR(st.st_mode)};
}

Result<void> WalkEntries(const Stack& stack, const std::string& upper, const std::string& dir,
                         const std::vector<Loc>& dirs, bool have_lowers,
                         std::vector<DiffEntry>* out) {
  auto names = LAMINA_TRY(ListDir(JoinPath(upper, dir)));
  for (const auto& name : names) {
    UpperItem item = LAMINA_TRY(Classify(upper, dir, name));
    if (item.kind == UpperItem::Kind::kSkip) continue;
    if (item.kind == UpperItem::Kind::kWhiteout) {
      out->push_back({item.path, DiffEntry::Kind::kWhiteout});
      continue;
    }
    out->push_back({item.path, DiffEntry::Kind::kContent});
    std::string abs = JoinPath(upper, item.path);
    if (!item.is_dir) {
      LAMINA_CHECK(RefuseMetacopy(abs, item.path));
      continue;
    }
    auto redirect = LAMINA_TRY(stack.Redirect(abs));
    Lookup found = LAMINA_TRY(stack.Find(dirs, name));
    if (redirect) {
      if (!have_lowers) {
        return Fail(EINVAL, "directory " + item.path + " is redirected to '" + *redirect +
                                "': writing its layer tar needs the lower layers");
      }
      // No redirects in OCI tars: the whole merged directory, opaque.
      out->push_back({item.path, DiffEntry::Kind::kOpaque});
      LAMINA_CHECK(EmitMerged(stack, item.path, found.dirs, out));
      continue;
    }
    if (LAMINA_TRY(stack.Opaque(abs))) out->push_back({item.path, DiffEntry::Kind::kOpaque});
    LAMINA_CHECK(WalkEntries(stack, upper, item.path, found.dirs, have_lowers, out));
  }
  return {};
}

Result<void> WalkChanges(const Stack& stack, const std::string& upper, const std::string& dir,
                         const std::vector<Loc>& view, const std::vector<Loc>& below,
                         bool have_lowers, std::vector<Change>* out) {
  auto names = LAMINA_TRY(ListDir(JoinPath(upper, dir)));
  for (const auto& name : names) {
    UpperItem item = LAMINA_TRY(Classify(upper, dir, name));
    if (item.kind == UpperItem::Kind::kSkip) continue;
    if (item.kind == UpperItem::Kind::kWhiteout) {
      // Only what existed at this path below was deleted (a whiteout can
      // also hide what a redirected directory brought along).
      bool existed = !have_lowers;
      if (!existed && !below.empty()) {
        existed = LAMINA_TRY(stack.Find(below, SplitParent(item.path).second)).found();
      }
      if (existed) out->push_back({item.path, ChangeKind::kDeleted});
      continue;
    }
    Lookup lower = below.empty() ? Lookup{} : LAMINA_TRY(stack.Find(below, name));
    out->push_back({item.path, lower.found() ? ChangeKind::kModified : ChangeKind::kAdded});
    if (!item.is_dir) continue;
    std::string abs = JoinPath(upper, item.path);
    auto redirect = LAMINA_TRY(stack.Redirect(abs));
    bool opaque = LAMINA_TRY(stack.Opaque(abs));
    Lookup merged = LAMINA_TRY(stack.Find(view, name));
    if (opaque || redirect) {
      // What the lowers had at this path and the upper does not show.
      std::set<std::string> upper_names;
      for (const auto& n : LAMINA_TRY(ListDir(abs))) upper_names.insert(n);
      for (const auto& n : LAMINA_TRY(stack.Names(lower.dirs))) {
        if (!upper_names.contains(n)) out->push_back({JoinPath(item.path, n), ChangeKind::kDeleted});
      }
    }
    if (redirect) {
      // Content that came along with the renamed directory.
      std::vector<DiffEntry> moved;
      LAMINA_CHECK(EmitMerged(stack, item.path, merged.dirs, &moved));
      for (const auto& e : moved) {
        if (e.source.empty()) continue;  // in the upper: the walk below reports it
        Lookup at = LAMINA_TRY(stack.Resolve(e.path, 1));
        out->push_back({e.path, at.found() ? ChangeKind::kModified : ChangeKind::kAdded});
      }
    }
    LAMINA_CHECK(
        WalkChanges(stack, upper, item.path, merged.dirs, lower.dirs, have_lowers, out));
  }
  return {};
}

}  // namespace

Result<std::vector<DiffEntry>> UnionDiffEntries(const std::string& upper,
                                                const std::vector<std::string>& lowers) {
  std::vector<std::string> roots = {upper};
  roots.insert(roots.end(), lowers.begin(), lowers.end());
  Stack stack(std::move(roots));
  std::vector<DiffEntry> out;
  auto r = WalkEntries(stack, upper, "", stack.Root(), !lowers.empty(), &out);
  if (!r) return Fail(r.error().Wrap("diff of " + upper));
  // A path can show up twice (a `.wh.NAME` file beside a 0/0 device, say).
  std::sort(out.begin(), out.end(), [](const DiffEntry& a, const DiffEntry& b) {
    return std::tie(a.path, a.kind) < std::tie(b.path, b.kind);
  });
  out.erase(std::unique(out.begin(), out.end(),
                        [](const DiffEntry& a, const DiffEntry& b) {
                          return a.path == b.path && a.kind == b.kind;
                        }),
            out.end());
  return out;
}

Result<std::vector<DiffEntry>> UnionDiffEntries(const std::string& upper) {
  return UnionDiffEntries(upper, {});
}

Result<std::vector<Change>> UnionChanges(const std::string& upper,
                                         const std::vector<std::string>& lowers) {
  std::vector<std::string> roots = {upper};
  roots.insert(roots.end(), lowers.begin(), lowers.end());
  Stack stack(std::move(roots));
  std::vector<Change> out;
  auto below = lowers.empty() ? std::vector<Loc>{} : stack.Root(1);
  auto r = WalkChanges(stack, upper, "", stack.Root(), below, !lowers.empty(), &out);
  if (!r) return Fail(r.error().Wrap("changes of " + upper));
  std::stable_sort(out.begin(), out.end(),
                   [](const Change& a, const Change& b) { return a.path < b.path; });
  out.erase(std::unique(out.begin(), out.end(),
                        [](const Change& a, const Change& b) { return a.path == b.path; }),
            out.end());
  return out;
}

}  // namespace lamina
