#include "store/images.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <set>

#include "common/fs.h"
#include "common/scope_guard.h"

namespace lamina::store {

namespace {

bool NameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
         c == '/' || c == '-';
}

constexpr const char* kNameRule =
    "image names are [a-z0-9][a-z0-9._:/-]* (at most 200 bytes, no empty, \".\" or \"..\" "
    "components, at most one ':' tag after the last '/')";

Result<std::vector<std::string>> StringArray(const nlohmann::json& j, const char* key) {
  std::vector<std::string> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  if (!j[key].is_array()) return Fail(EINVAL, std::string("\"") + key + "\" must be an array");
  for (const auto& item : j[key]) {
    if (!item.is_string()) {
      return Fail(EINVAL, std::string("\"") + key + "\" must hold strings");
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

Result<std::string> StringField(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::string();
  if (!j[key].is_string()) return Fail(EINVAL, std::string("\"") + key + "\" must be a string");
  return j[key].get<std::string>();
}

bool SafeLayerId(const std::string& id) {
  return !id.empty() && id.size() <= 128 && id.find('/') == std::string::npos && id[0] != '.';
}

}  // namespace

Result<std::string> NormalizeImageName(const std::string& name) {
  auto bad = [&](const std::string& why) {
    return Fail(EINVAL, "image name \"" + name + "\": " + why + "; " + kNameRule);
  };
  if (name.empty()) return bad("empty");
  if (name.size() > 200) return bad("too long");
  char first = name[0];
  if (!((first >= 'a' && first <= 'z') || (first >= '0' && first <= '9'))) {
    return bad("bad first character");
  }
  for (char c : name) {
    if (!NameChar(c)) return bad("bad character");
  }
  size_t start = 0;
  while (true) {
    size_t slash = name.find('/', start);
    std::string component = name.substr(start, slash == std::string::npos ? slash : slash - start);
    if (component.empty() || component == "." || component == "..") return bad("bad component");
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  std::string last = name.substr(name.rfind('/') == std::string::npos ? 0 : name.rfind('/') + 1);
  size_t colon = last.find(':');
  std::string out = name;
  if (colon == std::string::npos) {
    if (name != kBusyboxImage) out += ":latest";
  } else {
    if (last.find(':', colon + 1) != std::string::npos) return bad("more than one tag");
    if (colon + 1 == last.size()) return bad("empty tag");
    if (colon == 0) return bad("empty name before the tag");
  }
  if (ImageFileName(out).size() > 255) return bad("too long");
  return out;
}

std::string ImageFileName(const std::string& normalized) {
  std::string file;
  for (char c : normalized) {
    if (c == '/') {
      file += "%2F";
    } else {
      file += c;
    }
  }
  return file + ".json";
}

nlohmann::json ImageJson(const Image& image) {
  nlohmann::json config = {
      {"entrypoint", image.config.entrypoint},
      {"cmd", image.config.cmd},
      {"env", image.config.env},
      {"working_dir", image.config.working_dir},
      {"user", image.config.user},
      {"hostname", image.config.hostname},
  };
  return nlohmann::json{{"name", image.name},
                        {"layers", image.layers},
                        {"config", config},
                        {"created", image.created},
                        {"manifest_digest", image.manifest_digest},
                        {"source", image.source}};
}

Result<Image> ParseImage(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Fail(EINVAL, "image record: not a JSON object");
  auto parse = [&]() -> Result<Image> {
    Image image;
    image.name = LAMINA_TRY(StringField(j, "name"));
    if (image.name.empty()) return Fail(EINVAL, "\"name\" missing");
    image.layers = LAMINA_TRY(StringArray(j, "layers"));
    image.created = LAMINA_TRY(StringField(j, "created"));
    image.manifest_digest = LAMINA_TRY(StringField(j, "manifest_digest"));
    image.source = LAMINA_TRY(StringField(j, "source"));
    if (j.contains("config") && !j["config"].is_null()) {
      const auto& c = j["config"];
      if (!c.is_object()) return Fail(EINVAL, "\"config\" must be an object");
      image.config.entrypoint = LAMINA_TRY(StringArray(c, "entrypoint"));
      image.config.cmd = LAMINA_TRY(StringArray(c, "cmd"));
      image.config.env = LAMINA_TRY(StringArray(c, "env"));
      image.config.working_dir = LAMINA_TRY(StringField(c, "working_dir"));
      image.config.user = LAMINA_TRY(StringField(c, "user"));
      image.config.hostname = LAMINA_TRY(StringField(c, "hostname"));
    }
    return image;
  };
  auto image = parse();
  if (!image) return Fail(image.error().Wrap("image record"));
  return image;
}

Result<StoreLock> ImageStore::LockImages() {
  LAMINA_CHECK(MakeDirs(ImagesDir(), 0700));
  auto lock = LAMINA_TRY(StoreLock::Acquire(ImagesDir() + "/.lock", LockMode::kExclusive));
  // A journal found while we hold the lock was left by a process that died
  // in the middle of Create: its layers are not part of any image.
  std::string journal = JournalPath();
  if (PathExists(journal)) {
    auto text = ReadFile(journal);
    nlohmann::json j = text ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
    if (j.is_object() && j.contains("layers") && j["layers"].is_array()) {
      std::vector<std::string> ids;
      for (const auto& id : j["layers"]) {
        if (id.is_string()) ids.push_back(id.get<std::string>());
      }
      spdlog::info("removing {} layer(s) of an interrupted image import", ids.size());
      RemoveUnusedLayers(ids);
    }
    ::unlink(journal.c_str());
  }
  return lock;
}

Result<void> ImageStore::WriteJournal(const std::vector<std::string>& layers) {
  return WriteFileAtomic(JournalPath(), nlohmann::json{{"layers", layers}}.dump() + "\n", 0600);
}

Result<std::optional<Image>> ImageStore::ReadRecord(const std::string& normalized) {
  auto text = ReadFile(RecordPath(normalized));
  if (!text) {
    if (text.error().code() == ENOENT) return std::optional<Image>();
    return Fail(text.error().Wrap("image " + normalized));
  }
  auto image = ParseImage(*text);
  if (!image) return Fail(image.error().Wrap("image " + normalized));
  if (image->name != normalized) {
    return Fail(EINVAL, "image " + normalized + ": its record names " + image->name);
  }
  return std::optional<Image>(std::move(*image));
}

Result<void> ImageStore::WriteRecord(const Image& image) {
  if (image.layers.empty()) {
    return Fail(EINVAL, "image " + image.name + ": an image needs at least one layer");
  }
  auto lock = LAMINA_TRY(store_.Lock(LockMode::kExclusive));
  // The layers must be ready and form one chain, bottom first. Read from
  // layer.json directly: Store operations would wait for our own lock.
  std::string parent;
  for (const auto& id : image.layers) {
    if (!SafeLayerId(id)) return Fail(EINVAL, "image " + image.name + ": bad layer id " + id);
    auto text = ReadFile(store_.root() + "/layers/" + id + "/layer.json");
    if (!text) {
      if (text.error().code() == ENOENT) return Fail(ENOENT, "layer " + id);
      return Fail(text.error());
    }
    auto layer = ParseLayerInfo(*text);
    if (!layer) return Fail(layer.error().Wrap("layer " + id));
    if (layer->state != LayerState::kReady) return Fail(ENOENT, "layer " + id);
    if (layer->parent != parent) {
      return Fail(EINVAL, "image " + image.name + ": layer " + id + " has parent \"" +
                              layer->parent + "\", not \"" + parent + "\"");
    }
    parent = id;
  }
  LAMINA_CHECK(MakeDirs(ImagesDir(), 0700));
  return WriteFileAtomic(RecordPath(image.name), ImageJson(image).dump(2) + "\n", 0600);
}

Result<void> ImageStore::DeleteRecord(const std::string& normalized) {
  auto lock = LAMINA_TRY(store_.Lock(LockMode::kExclusive));
  std::string path = RecordPath(normalized);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return Fail(ENOENT, "image " + normalized);
    return FailErrno("remove " + path);
  }
  return FsyncPath(ImagesDir());
}

Result<Image> ImageStore::Get(const std::string& name) {
  std::string normalized = LAMINA_TRY(NormalizeImageName(name));
  auto record = LAMINA_TRY(ReadRecord(normalized));
  if (record) return std::move(*record);
  if (normalized == kBusyboxImage) return EnsureBusybox();
  return Fail(ENOENT, "image " + normalized);
}

Result<std::vector<Image>> ImageStore::List() {
  std::vector<Image> images;
  if (!PathExists(ImagesDir())) return images;
  for (const auto& file : LAMINA_TRY(ListDir(ImagesDir()))) {
    if (file.starts_with(".") || !file.ends_with(".json")) continue;
    auto text = ReadFile(ImagesDir() + "/" + file);
    if (!text) {
      if (text.error().code() != ENOENT)
        spdlog::warn("image record {}: {}", file, text.error().message());
      continue;
    }
    auto image = ParseImage(*text);
    if (!image) {
      spdlog::warn("skipping image record {}: {}", file, image.error().message());
      continue;
    }
    images.push_back(std::move(*image));
  }
  std::sort(images.begin(), images.end(),
            [](const Image& a, const Image& b) { return a.name < b.name; });
  return images;
}

Result<void> ImageStore::Put(const Image& image) {
  Image copy = image;
  copy.name = LAMINA_TRY(NormalizeImageName(image.name));
  if (copy.created.empty()) copy.created = NowRfc3339();
  auto images_lock = LAMINA_TRY(LockImages());
  return WriteRecord(copy);
}

Result<void> ImageStore::Remove(const std::string& name) {
  std::string normalized = LAMINA_TRY(NormalizeImageName(name));
  auto images_lock = LAMINA_TRY(LockImages());
  auto record = LAMINA_TRY(ReadRecord(normalized));
  if (!record) return Fail(ENOENT, "image " + normalized);
  LAMINA_CHECK(DeleteRecord(normalized));
  RemoveUnusedLayers(record->layers);
  return {};
}

void ImageStore::RemoveUnusedLayers(const std::vector<std::string>& layers) {
  std::set<std::string> used;
  auto images = List();
  if (!images) {
    spdlog::warn("keeping layers: {}", images.error().message());
    return;
  }
  for (const auto& image : *images) used.insert(image.layers.begin(), image.layers.end());
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
    // Every layer below a used one is used too (an image is a whole chain).
    if (used.contains(*it)) return;
    auto removed = store_.RemoveLayer(*it);
    if (!removed && removed.error().code() != ENOENT) {
      // A container layer on it, a mount, another process: it stays, and so
      // do the layers below it.
      spdlog::debug("keeping layer {}: {}", *it, Describe(removed.error()));
      return;
    }
  }
}

Result<CreateReport> ImageStore::Create(Image image, const std::vector<LayerSource>& layers,
                                        const CreateOptions& options) {
  auto images_lock = LAMINA_TRY(LockImages());
  return CreateLocked(std::move(image), layers, options);
}

Result<CreateReport> ImageStore::CreateLocked(Image image, const std::vector<LayerSource>& layers,
                                              const CreateOptions& options) {
  image.name = LAMINA_TRY(NormalizeImageName(image.name));
  if (layers.empty()) {
    return Fail(EINVAL, "image " + image.name + ": an image needs at least one layer");
  }
  auto old = LAMINA_TRY(ReadRecord(image.name));
  if (old && !options.replace) return Fail(EEXIST, "image " + image.name);

  CreateReport report;
  // The journal lists every layer this Create may make before it is made,
  // so that a crash leaves nothing the next LockImages does not clean up.
  std::vector<std::string> journal;
  auto undo = Defer([&] {
    for (auto it = report.applied.rbegin(); it != report.applied.rend(); ++it) {
      auto removed = store_.RemoveLayer(*it);
      if (!removed) spdlog::warn("layer {}: {}", *it, removed.error().message());
    }
    ::unlink(JournalPath().c_str());
  });
  // A ready, read-only layer on `parent` with `diff_id`, other than `except`.
  auto find_shared = [&](const std::string& parent, const std::string& diff_id,
                         const std::string& except) -> Result<std::optional<std::string>> {
    for (const auto& layer : LAMINA_TRY(store_.ListLayers())) {
      if (layer.parent == parent && layer.diff_id == diff_id && !layer.writable &&
          layer.state == LayerState::kReady && layer.id != except) {
        return std::optional<std::string>(layer.id);
      }
    }
    return std::optional<std::string>();
  };

  std::string parent;
  image.layers.clear();
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSource& source = layers[i];
    std::string what =
        source.description.empty() ? "layer " + std::to_string(i + 1) : source.description;
    if (!source.diff_id.empty()) {
      if (auto shared = LAMINA_TRY(find_shared(parent, source.diff_id, ""))) {
        report.reused.push_back(*shared);
        image.layers.push_back(*shared);
        parent = *shared;
        continue;
      }
    }
    auto fd = source.open();
    if (!fd) return Fail(fd.error().Wrap(what));
    journal.push_back(RandomId());
    LAMINA_CHECK(WriteJournal(journal));
    auto applied = store_.ApplyLayer(parent, fd->get(), journal.back());
    if (!applied) return Fail(applied.error().Wrap(what));
    report.applied.push_back(applied->id);
    if (!source.diff_id.empty() && applied->diff_id != source.diff_id) {
      return Fail(EINVAL, what + ": the tar's DiffID is " + applied->diff_id +
                              ", the image config says " + source.diff_id);
    }
    std::string id = applied->id;
    if (source.diff_id.empty()) {
      // Known only now: share an equal layer that was already there.
      if (auto shared = LAMINA_TRY(find_shared(parent, applied->diff_id, id))) {
        LAMINA_CHECK(store_.RemoveLayer(id));
        report.applied.pop_back();
        report.reused.push_back(*shared);
        id = *shared;
      }
    }
    image.layers.push_back(id);
    parent = id;
  }
  if (image.created.empty()) image.created = NowRfc3339();
  LAMINA_CHECK(WriteRecord(image));
  undo.Dismiss();
  ::unlink(JournalPath().c_str());
  if (old) {
    // Only a tail of the old chain can be unused now; RemoveUnusedLayers
    // stops at the first layer an image still uses.
    RemoveUnusedLayers(old->layers);
  }
  report.image = std::move(image);
  return report;
}

Result<Image> ImageStore::EnsureBusybox() {
  {
    // Fast path without the lock.
    auto record = LAMINA_TRY(ReadRecord(kBusyboxImage));
    if (record && !record->layers.empty() && store_.GetLayer(record->layers.back())) {
      return std::move(*record);
    }
  }
  auto images_lock = LAMINA_TRY(LockImages());
  auto record = LAMINA_TRY(ReadRecord(kBusyboxImage));
  if (record && !record->layers.empty() && store_.GetLayer(record->layers.back())) {
    return std::move(*record);  // another process made it while we waited
  }
  return BuildBusyboxLocked();
}

}  // namespace lamina::store
