#include "store/image_import.h"

#include <archive.h>
#include <archive_entry.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/fs.h"
#include "common/hash.h"
#include "common/path.h"
#include "common/scope_guard.h"
#include "store/image_oci.h"
#include "store/image_parse.h"
#include "store/lock.h"

namespace lamina::store {

namespace {

// Manifests, indexes and configs are small; a bigger one is hostile.
constexpr uint64_t kMaxJsonBytes = uint64_t{8} << 20;

using nlohmann::json;
using oci::Descriptor;
using oci::ParseJson;

// Where the members of a layout or archive come from. Names are clean
// relative paths ("blobs/sha256/<hex>", "manifest.json").
class BlobSource {
 public:
  virtual ~BlobSource() = default;
  // A regular member opened read-only; ENOENT when there is none.
  virtual Result<Fd> Open(const std::string& name) const = 0;
  // "layout DIR", "archive FILE".
  virtual const std::string& where() const = 0;
};

// An OCI layout directory: members opened beneath it, no symlinks followed.
class DirSource final : public BlobSource {
 public:
  static Result<std::unique_ptr<DirSource>> Make(const std::string& dir) {
    auto source = std::unique_ptr<DirSource>(new DirSource());
    source->root_ = LAMINA_TRY(lamina::Open(dir, O_PATH | O_DIRECTORY));
    source->where_ = "layout " + dir;
    return source;
  }
  Result<Fd> Open(const std::string& name) const override {
    auto fd = OpenAt2(root_.get(), name, O_RDONLY | O_NOCTTY, 0,
                      RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
    if (!fd) {
      if (fd.error().code() == ELOOP) return Fail(EINVAL, where_ + ": " + name + " is a symlink");
      return Fail(fd.error().code(), where_ + ": " + name);
    }
    struct stat st;
    if (::fstat(fd->get(), &st) != 0) return FailErrno(where_ + ": " + name);
    if (!S_ISREG(st.st_mode)) return Fail(EINVAL, where_ + ": " + name + " is not a regular file");
    return fd;
  }
  const std::string& where() const override { return where_; }

 private:
  DirSource() = default;
  Fd root_;
  std::string where_;
};

// A tar unpacked member by member into files of a temporary directory named
// by number (never by the member's name); symlinks and hard links between
// members are resolved by name, inside the archive only.
class ArchiveSource final : public BlobSource {
 public:
  static Result<std::unique_ptr<ArchiveSource>> Unpack(const std::string& file,
                                                       const std::string& tmp_dir);
  Result<Fd> Open(const std::string& name) const override {
    std::string current = name;
    for (int hops = 0; hops < 16; ++hops) {
      if (auto it = files_.find(current); it != files_.end()) {
        return lamina::Open(it->second, O_RDONLY);
      }
      auto link = symlinks_.find(current);
      if (link == symlinks_.end()) return Fail(ENOENT, where_ + ": " + name);
      if (link->second.starts_with("/")) {
        return Fail(EINVAL, where_ + ": " + current + " is a symlink out of the archive");
      }
      auto [parent, base] = SplitParent(current);
      auto next = CleanRelativePath(JoinPath(parent, link->second));
      if (!next) return Fail(EINVAL, where_ + ": " + current + " is a symlink out of the archive");
      current = *next;
    }
    return Fail(ELOOP, where_ + ": " + name);
  }
  const std::string& where() const override { return where_; }

 private:
  ArchiveSource() = default;
  std::string where_;
  std::map<std::string, std::string> files_;     // member name → unpacked file
  std::map<std::string, std::string> symlinks_;  // member name → link target
};

struct ArchiveReadFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

Result<std::unique_ptr<struct archive, ArchiveReadFree>> OpenTar(const std::string& file) {
  std::unique_ptr<struct archive, ArchiveReadFree> a(archive_read_new());
  if (!a) return Fail(ENOMEM, "archive_read_new");
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_filename(a.get(), file.c_str(), 1 << 16) != ARCHIVE_OK) {
    int code = archive_errno(a.get());
    const char* why = archive_error_string(a.get());
    if (code == ENOENT || code == EACCES || code == EPERM || code == EISDIR) {
      return Fail(code, file);
    }
    return Fail(EINVAL, file + ": not a tar archive (plain, gzip, zstd, ...)" +
                            (why ? std::string(": ") + why : ""));
  }
  return a;
}

Error ArchiveError(struct archive* a, const std::string& file) {
  const char* why = archive_error_string(a);
  return Error(EINVAL, file + ": not a readable tar" + (why ? std::string(": ") + why : ""));
}

// Calls `member(archive, entry, clean name)` for each member of the tar
// `file` whose name is a clean relative path (others are skipped with a
// warning); `member` returns false to stop early.
using MemberFn =
    std::function<Result<bool>(struct archive*, struct archive_entry*, const std::string&)>;
Result<void> ForEachMember(const std::string& file, const MemberFn& member) {
  auto a = LAMINA_TRY(OpenTar(file));
  while (true) {
    struct archive_entry* entry = nullptr;
    int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) return {};
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return Fail(ArchiveError(a.get(), file));
    const char* raw = archive_entry_pathname(entry);
    auto name = CleanRelativePath(raw ? raw : "");
    if (!name) {
      spdlog::warn("{}: skipping member \"{}\"", file, raw ? raw : "");
      continue;
    }
    if (name->empty()) continue;
    if (!LAMINA_TRY(member(a.get(), entry, *name))) return {};
  }
}

Result<std::unique_ptr<ArchiveSource>> ArchiveSource::Unpack(const std::string& file,
                                                             const std::string& tmp_dir) {
  auto source = std::unique_ptr<ArchiveSource>(new ArchiveSource());
  source->where_ = "archive " + file;
  std::map<std::string, std::string> hardlinks;
  size_t count = 0;
  std::vector<char> buf(1 << 17);
  LAMINA_CHECK(ForEachMember(
      file,
      [&](struct archive* a, struct archive_entry* entry, const std::string& name) -> Result<bool> {
        if (const char* hardlink = archive_entry_hardlink(entry)) {
          if (auto target = CleanRelativePath(hardlink)) hardlinks[name] = *target;
          return true;
        }
        mode_t type = archive_entry_filetype(entry);
        if (type == AE_IFLNK) {
          const char* target = archive_entry_symlink(entry);
          source->symlinks_[name] = target ? target : "";
          return true;
        }
        if (type != AE_IFREG) return true;
        std::string path = tmp_dir + "/m" + std::to_string(count++);
        Fd out = LAMINA_TRY(lamina::Open(path, O_WRONLY | O_CREAT | O_EXCL, 0600));
        while (true) {
          la_ssize_t n = archive_read_data(a, buf.data(), buf.size());
          if (n < 0) return Fail(ArchiveError(a, file));
          if (n == 0) break;
          auto written = oci::WriteAll(out.get(), {buf.data(), static_cast<size_t>(n)});
          if (!written) return Fail(written.error().Wrap("unpack " + file));
        }
        source->files_[name] = path;
        return true;
      }));
  for (const auto& [name, target] : hardlinks) {
    if (auto it = source->files_.find(target); it != source->files_.end()) {
      source->files_[name] = it->second;
    }
  }
  return source;
}

Result<std::string> ReadAll(int fd, uint64_t limit, const std::string& what) {
  std::string data;
  std::vector<char> buf(1 << 16);
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("read " + what);
    }
    if (n == 0) break;
    data.append(buf.data(), static_cast<size_t>(n));
    if (data.size() > limit) {
      return Fail(EFBIG, what + " is larger than " + std::to_string(limit) + " bytes");
    }
  }
  return data;
}

Result<json> ReadJsonMember(const BlobSource& source, const std::string& name) {
  Fd fd = LAMINA_TRY(source.Open(name));
  std::string what = source.where() + ": " + name;
  return ParseJson(LAMINA_TRY(ReadAll(fd.get(), kMaxJsonBytes, what)), what);
}

std::string BlobName(const std::string& digest) {
  return "blobs/sha256/" + digest.substr(std::string("sha256:").size());
}

// Opens a blob found by its digest only, and checks its size and sha256.
Result<void> VerifyBlob(const BlobSource& source, const Descriptor& d, const std::string& what) {
  auto fd = source.Open(BlobName(d.digest));
  if (!fd) {
    if (fd.error().code() == ENOENT) {
      return Fail(ENOENT, what + ": blob " + d.digest + " is missing from " + source.where());
    }
    return Fail(fd.error().Wrap(what));
  }
  auto hashed = oci::HashFd(fd->get());
  if (!hashed) return Fail(hashed.error().Wrap(what + ": blob " + d.digest));
  if (hashed->digest != d.digest) {
    return Fail(EINVAL, what + ": blob " + d.digest + " has the content of " + hashed->digest +
                            " (corrupt or tampered)");
  }
  if (hashed->size != d.size) {
    return Fail(EINVAL, what + ": blob " + d.digest + " is " + std::to_string(hashed->size) +
                            " bytes, the descriptor says " + std::to_string(d.size));
  }
  return {};
}

Result<json> ReadJsonBlob(const BlobSource& source, const Descriptor& d, const std::string& what) {
  if (d.size > kMaxJsonBytes) {
    return Fail(EFBIG, what + ": " + std::to_string(d.size) + " bytes is too large");
  }
  LAMINA_CHECK(VerifyBlob(source, d, what));
  Fd fd = LAMINA_TRY(source.Open(BlobName(d.digest)));
  return ParseJson(LAMINA_TRY(ReadAll(fd.get(), kMaxJsonBytes, what)), what);
}

// A name from a file or directory name: lower case, other characters as
// '-', extensions of tars dropped.
std::string NameFromPath(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::string base = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  for (const char* ext : {".tar.gz", ".tar.zst", ".tar.xz", ".tar.bz2", ".tgz", ".tzst", ".tar",
                          ".gz", ".zst", ".oci"}) {
    std::string_view e(ext);
    if (base.size() > e.size() && base.ends_with(e)) {
      base.resize(base.size() - e.size());
      break;
    }
  }
  std::string out;
  for (char c : base) {
    char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool ok = (l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '.' || l == '_' || l == '-';
    out += ok ? l : '-';
  }
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.front()))) out.erase(0, 1);
  return out;
}

Result<std::string> NameOrDerived(const ImportOptions& options, const std::string& candidate) {
  std::string name = !options.name.empty() ? options.name : candidate;
  if (name.empty()) {
    return Fail(EINVAL, "cannot derive an image name from " + options.path + "; pass --name");
  }
  return NormalizeImageName(name);
}

struct Plan {
  Image image;
  std::vector<LayerSource> layers;
};

bool IsIndexType(const std::string& media_type) {
  return media_type == oci::kMediaIndex || media_type == oci::kDockerManifestList;
}

Result<Plan> PlanOci(const BlobSource& source, const ImportOptions& options) {
  json layout = LAMINA_TRY(ReadJsonMember(source, "oci-layout"));
  if (!layout.is_object() || !layout.contains("imageLayoutVersion") ||
      !layout["imageLayoutVersion"].is_string()) {
    return Fail(EINVAL, source.where() + ": oci-layout has no imageLayoutVersion");
  }
  json index = LAMINA_TRY(ReadJsonMember(source, "index.json"));
  std::string what = source.where() + ": index.json";
  std::vector<Descriptor> entries = LAMINA_TRY(oci::ParseIndex(index, what, /*non_empty=*/true));
  auto ref_of = [](const Descriptor& d) {
    auto it = d.annotations.find(std::string(oci::kRefNameAnnotation));
    return it == d.annotations.end() ? std::string() : it->second;
  };
  auto full_name_of = [](const Descriptor& d) {
    auto it = d.annotations.find(std::string(oci::kContainerdNameAnnotation));
    return it == d.annotations.end() ? std::string() : it->second;
  };
  const Descriptor* chosen = nullptr;
  if (!options.ref.empty()) {
    auto wanted = NormalizeImageName(options.ref);
    for (const auto& d : entries) {
      std::string full = full_name_of(d);
      bool full_match =
          !full.empty() && (full == options.ref || (wanted && NormalizeImageName(full) == *wanted));
      if (ref_of(d) == options.ref || full_match) {
        chosen = &d;
        break;
      }
    }
  } else if (entries.size() == 1) {
    chosen = &entries.front();
  }
  if (chosen == nullptr) {
    std::string refs;
    for (const auto& d : entries) {
      std::string r = ref_of(d).empty() ? "(no ref.name) " + d.digest : ref_of(d);
      refs += (refs.empty() ? "" : ", ") + r;
    }
    if (!options.ref.empty()) {
      return Fail(ENOENT,
                  what + ": no image with ref \"" + options.ref + "\" (it has: " + refs + ")");
    }
    return Fail(EINVAL, what + " lists " + std::to_string(entries.size()) +
                            " images; choose one with --ref (refs: " + refs + ")");
  }

  Plan plan;
  std::string ref = ref_of(*chosen);
  std::string full = full_name_of(*chosen);
  std::string base = NameFromPath(options.path);
  std::string candidate = !full.empty()                                  ? full
                          : ref.find_first_of(":/") != std::string::npos ? ref
                          : !ref.empty() && !base.empty()                ? base + ":" + ref
                                                                         : base;
  plan.image.name = LAMINA_TRY(NameOrDerived(options, candidate));

  // Follow indexes (multi-platform images) to this host's manifest.
  Descriptor desc = *chosen;
  for (int depth = 0; IsIndexType(desc.media_type); ++depth) {
    if (depth >= 4) return Fail(EINVAL, what + ": indexes nested too deep");
    std::string w = source.where() + ": index " + desc.digest;
    json nested = LAMINA_TRY(ReadJsonBlob(source, desc, w));
    desc = LAMINA_TRY(oci::PickPlatform(nested, w));
  }
  if (!desc.media_type.empty() && desc.media_type != oci::kMediaManifest &&
      desc.media_type != oci::kDockerManifest) {
    return Fail(ENOTSUP, what + ": media type " + desc.media_type + " is not an image manifest");
  }
  std::string mwhat = source.where() + ": manifest " + desc.digest;
  json manifest_json = LAMINA_TRY(ReadJsonBlob(source, desc, mwhat));
  oci::Manifest manifest = LAMINA_TRY(oci::ParseManifest(manifest_json, mwhat));
  const Descriptor& config_desc = manifest.config;
  const std::vector<Descriptor>& layer_descs = manifest.layers;
  std::string cwhat = source.where() + ": config " + config_desc.digest;
  json config_json = LAMINA_TRY(ReadJsonBlob(source, config_desc, cwhat));
  oci::ParsedConfig config = LAMINA_TRY(oci::ParseImageConfig(config_json, cwhat));
  if (config.diff_ids.size() != layer_descs.size()) {
    return Fail(EINVAL, cwhat + ": " + std::to_string(config.diff_ids.size()) + " diff_ids for " +
                            std::to_string(layer_descs.size()) + " layers");
  }
  // Every layer blob is checked before anything is created.
  for (size_t i = 0; i < layer_descs.size(); ++i) {
    std::string lwhat = "layer " + std::to_string(i + 1) + " (" + layer_descs[i].digest + ")";
    LAMINA_CHECK(VerifyBlob(source, layer_descs[i], source.where() + ": " + lwhat));
    LayerSource layer;
    layer.diff_id = config.diff_ids[i];
    layer.description = lwhat;
    std::string blob = BlobName(layer_descs[i].digest);
    layer.open = [&source, blob]() { return source.Open(blob); };
    plan.layers.push_back(std::move(layer));
  }
  plan.image.config = config.config;
  plan.image.created = config.created;
  plan.image.manifest_digest = desc.digest;
  plan.image.source = "oci";
  return plan;
}

// A path from a docker manifest.json: relative, no "..": the archive is read
// by member name, but a manifest that tries to leave it is refused outright.
Result<std::string> ArchivePath(const std::string& path, const std::string& what) {
  if (path.empty()) return Fail(EINVAL, what + ": empty path");
  if (path.starts_with("/")) return Fail(EINVAL, what + ": absolute path \"" + path + "\" refused");
  for (const auto& part : SplitComponents(path)) {
    if (part == "..") {
      return Fail(EINVAL, what + ": path \"" + path + "\" leaves the archive (\"..\"); refused");
    }
  }
  auto clean = CleanRelativePath(path);
  if (!clean || clean->empty()) return Fail(EINVAL, what + ": bad path \"" + path + "\"");
  return *clean;
}

// The sha256 a docker archive member's name promises: "<hex>.json",
// "blobs/sha256/<hex>"; "" when the name promises none.
std::string PromisedDigest(const std::string& name) {
  if (name.size() == 69 && name.ends_with(".json") && oci::IsHex64(name.substr(0, 64))) {
    return "sha256:" + name.substr(0, 64);
  }
  if (name.starts_with("blobs/sha256/") && oci::IsHex64(name.substr(13))) {
    return "sha256:" + name.substr(13);
  }
  return "";
}

Result<void> CheckPromise(const BlobSource& source, const std::string& name,
                          const std::string& what) {
  std::string promised = PromisedDigest(name);
  if (promised.empty()) return {};
  Fd fd = LAMINA_TRY(source.Open(name));
  auto hashed = LAMINA_TRY(oci::HashFd(fd.get()));
  if (hashed.digest != promised) {
    return Fail(EINVAL, what + ": " + name + " has the content of " + hashed.digest +
                            " (corrupt or tampered)");
  }
  return {};
}

Result<Plan> PlanDocker(const BlobSource& source, const ImportOptions& options) {
  std::string what = source.where() + ": manifest.json";
  std::vector<oci::DockerEntry> manifest = LAMINA_TRY(
      oci::ParseDockerManifest(LAMINA_TRY(ReadJsonMember(source, "manifest.json")), what));
  const oci::DockerEntry* chosen = nullptr;
  std::string chosen_tag;
  std::vector<std::string> all_tags;
  for (const auto& entry : manifest) {
    all_tags.insert(all_tags.end(), entry.repo_tags.begin(), entry.repo_tags.end());
    if (options.ref.empty()) continue;
    auto wanted = NormalizeImageName(options.ref);
    for (const auto& tag : entry.repo_tags) {
      if (tag == options.ref || (wanted && NormalizeImageName(tag) == *wanted)) {
        chosen = &entry;
        chosen_tag = tag;
      }
    }
  }
  if (options.ref.empty() && manifest.size() == 1) {
    chosen = &manifest[0];
    if (!chosen->repo_tags.empty()) chosen_tag = chosen->repo_tags.front();
  }
  if (chosen == nullptr) {
    std::string list;
    for (const auto& t : all_tags) list += (list.empty() ? "" : ", ") + t;
    if (!options.ref.empty()) {
      return Fail(ENOENT, what + ": no image tagged \"" + options.ref + "\" (tags: " + list + ")");
    }
    return Fail(EINVAL, what + " lists " + std::to_string(manifest.size()) +
                            " images; choose one with --ref (tags: " + list + ")");
  }
  Plan plan;
  // A docker.io short name ("docker.io/library/busybox:1") is kept as given.
  std::string candidate = chosen_tag;
  if (candidate.empty()) candidate = NameFromPath(options.path);
  plan.image.name = LAMINA_TRY(NameOrDerived(options, candidate));

  std::string config_path = LAMINA_TRY(ArchivePath(chosen->config, what + " Config"));
  auto config_fd = source.Open(config_path);
  if (!config_fd) {
    return Fail(config_fd.error().code(), what + ": config " + config_path + " is missing");
  }
  LAMINA_CHECK(CheckPromise(source, config_path, what));
  std::string cwhat = source.where() + ": " + config_path;
  json config_json =
      LAMINA_TRY(ParseJson(LAMINA_TRY(ReadAll(config_fd->get(), kMaxJsonBytes, cwhat)), cwhat));
  oci::ParsedConfig config = LAMINA_TRY(oci::ParseImageConfig(config_json, cwhat));
  const std::vector<std::string>& layer_paths = chosen->layers;
  if (layer_paths.size() != config.diff_ids.size()) {
    return Fail(EINVAL, what + ": " + std::to_string(layer_paths.size()) +
                            " layers, the config has " + std::to_string(config.diff_ids.size()) +
                            " diff_ids");
  }
  for (size_t i = 0; i < layer_paths.size(); ++i) {
    std::string lwhat = "layer " + std::to_string(i + 1) + " (" + layer_paths[i] + ")";
    std::string path = LAMINA_TRY(ArchivePath(layer_paths[i], what + " " + lwhat));
    auto probe = source.Open(path);
    if (!probe) {
      if (probe.error().code() == ENOENT) {
        return Fail(ENOENT, what + ": " + lwhat + " is missing from the archive");
      }
      return Fail(probe.error().Wrap(what + ": " + lwhat));
    }
    LAMINA_CHECK(CheckPromise(source, path, what));
    LayerSource layer;
    layer.diff_id = config.diff_ids[i];
    layer.description = lwhat;
    layer.open = [&source, path]() { return source.Open(path); };
    plan.layers.push_back(std::move(layer));
  }
  plan.image.config = config.config;
  plan.image.created = config.created;
  plan.image.source = "docker-archive";
  return plan;
}

Result<Plan> PlanRootfs(const ImportOptions& options) {
  Plan plan;
  plan.image.name = LAMINA_TRY(NameOrDerived(options, NameFromPath(options.path)));
  plan.image.config.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  plan.image.source = "rootfs";
  LayerSource layer;
  layer.description = "rootfs " + options.path;
  std::string path = options.path;
  layer.open = [path]() { return lamina::Open(path, O_RDONLY); };
  plan.layers.push_back(std::move(layer));
  return plan;
}

// Members of docker and OCI archives (as opposed to a root filesystem).
bool ArchiveMember(const std::string& name) {
  if (name == "manifest.json" || name == "repositories" || name == "index.json" ||
      name == "oci-layout" || name == "blobs" || name == "blobs/sha256") {
    return true;
  }
  if (name.starts_with("blobs/sha256/")) return oci::IsHex64(name.substr(13));
  if (name.size() == 69 && name.ends_with(".json")) return oci::IsHex64(name.substr(0, 64));
  if (oci::IsHex64(name.substr(0, 64))) {
    std::string rest = name.substr(64);
    return rest.empty() || rest == "/layer.tar" || rest == "/json" || rest == "/VERSION";
  }
  return false;
}

std::string TempBase(const ImportOptions& options) {
  if (!options.tmp_dir.empty()) return options.tmp_dir;
  const char* env = std::getenv("TMPDIR");
  return env != nullptr && *env != '\0' ? env : "/var/tmp";
}

// Unpacked archives of imports that were killed: lamina-import-* in `base`
// whose .lock no live import holds, older than a minute (a new one may not
// have taken its lock yet).
void RemoveStaleUnpacks(const std::string& base) {
  auto names = ListDir(base);
  if (!names) return;
  time_t now = ::time(nullptr);
  for (const auto& name : *names) {
    if (!name.starts_with("lamina-import-")) continue;
    std::string dir = base + "/" + name;
    struct stat st;
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() ||
        now - st.st_mtime < 60) {
      continue;
    }
    auto lock = StoreLock::TryAcquire(dir + "/.lock", LockMode::kExclusive);
    if (!lock) continue;
    spdlog::info("removing {} left by an interrupted import", dir);
    (void)RemoveTree(dir);
  }
}

}  // namespace

Result<ImportFormat> ParseImportFormat(const std::string& name) {
  if (name == "auto" || name.empty()) return ImportFormat::kAuto;
  if (name == "oci") return ImportFormat::kOciLayout;
  if (name == "docker") return ImportFormat::kDockerArchive;
  if (name == "rootfs") return ImportFormat::kRootfsTar;
  return Fail(EINVAL, "format \"" + name + "\": use auto, oci, docker or rootfs");
}

Result<ImportFormat> DetectImportFormat(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return FailErrno(path);
  if (S_ISDIR(st.st_mode)) {
    if (!PathExists(path + "/oci-layout")) {
      return Fail(EINVAL,
                  path + ": a directory without an oci-layout file is not an OCI image layout");
    }
    return ImportFormat::kOciLayout;
  }
  if (!S_ISREG(st.st_mode)) return Fail(EINVAL, path + ": neither a directory nor a file");
  bool manifest = false, layout = false, index = false, rootfs = false;
  LAMINA_CHECK(ForEachMember(
      path, [&](struct archive*, struct archive_entry*, const std::string& name) -> Result<bool> {
        if (!ArchiveMember(name)) {
          rootfs = true;  // a root filesystem; no need to read further
          return false;
        }
        manifest |= name == "manifest.json";
        layout |= name == "oci-layout";
        index |= name == "index.json";
        return true;
      }));
  if (rootfs) return ImportFormat::kRootfsTar;
  if (manifest) return ImportFormat::kDockerArchive;
  if (layout && index) return ImportFormat::kOciLayout;
  return ImportFormat::kRootfsTar;
}

Result<CreateReport> ImportImage(ImageStore& images, const ImportOptions& options) {
  ImportFormat format = options.format;
  if (format == ImportFormat::kAuto) format = LAMINA_TRY(DetectImportFormat(options.path));
  struct stat st;
  if (::stat(options.path.c_str(), &st) != 0) return FailErrno(options.path);

  if (!options.name.empty()) LAMINA_TRY(NormalizeImageName(options.name));
  std::unique_ptr<BlobSource> source;
  std::string tmp;
  std::optional<StoreLock> unpack_lock;
  auto cleanup = Defer([&] {
    if (!tmp.empty()) (void)RemoveTree(tmp);
  });
  if (format != ImportFormat::kRootfsTar) {
    if (S_ISDIR(st.st_mode)) {
      if (format != ImportFormat::kOciLayout) {
        return Fail(EINVAL, options.path + ": a directory can only be an OCI image layout");
      }
      source = LAMINA_TRY(DirSource::Make(options.path));
    } else {
      std::string base = TempBase(options);
      RemoveStaleUnpacks(base);
      std::string templ = base + "/lamina-import-XXXXXX";
      if (::mkdtemp(templ.data()) == nullptr) return FailErrno("mkdtemp " + templ);
      tmp = templ;
      // Held while the import runs: tells RemoveStaleUnpacks it is alive.
      unpack_lock = LAMINA_TRY(StoreLock::Acquire(tmp + "/.lock", LockMode::kExclusive));
      source = LAMINA_TRY(ArchiveSource::Unpack(options.path, tmp));
    }
  } else if (S_ISDIR(st.st_mode)) {
    return Fail(EINVAL, options.path + ": a rootfs import needs a tar file");
  }

  Plan plan;
  switch (format) {
    case ImportFormat::kOciLayout:
      plan = LAMINA_TRY(PlanOci(*source, options));
      break;
    case ImportFormat::kDockerArchive:
      plan = LAMINA_TRY(PlanDocker(*source, options));
      break;
    case ImportFormat::kRootfsTar:
    case ImportFormat::kAuto:
      plan = LAMINA_TRY(PlanRootfs(options));
      break;
  }
  CreateOptions create;
  create.replace = options.replace;
  return images.Create(std::move(plan.image), plan.layers, create);
}

}  // namespace lamina::store
