#include "store/image_export.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/hash.h"
#include "common/scope_guard.h"
#include "store/image_oci.h"

namespace lamina::store {

namespace {

using nlohmann::json;

// The OCI ref grammar's characters (image-layout: ref.name).
bool ValidRef(const std::string& ref) {
  if (ref.empty() || ref.size() > 255) return false;
  for (char c : ref) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == ':' || c == '@' || c == '+' || c == '/';
    if (!ok) return false;
  }
  return std::isalnum(static_cast<unsigned char>(ref.front())) &&
         std::isalnum(static_cast<unsigned char>(ref.back()));
}

std::string TagOf(const std::string& name) {
  size_t slash = name.rfind('/');
  size_t colon = name.rfind(':');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) return "latest";
  return name.substr(colon + 1);
}

struct Blob {
  std::string digest;
  uint64_t size = 0;
};

Result<Blob> WriteJsonBlob(const std::string& blobs, const json& j) {
  std::string bytes = j.dump();
  Blob blob{"sha256:" + Sha256Hex(bytes), bytes.size()};
  LAMINA_CHECK(WriteFileAtomic(blobs + "/" + blob.digest.substr(7), bytes, 0644));
  return blob;
}

json Descriptor(std::string_view media_type, const std::string& digest, uint64_t size) {
  return json{{"mediaType", media_type}, {"digest", digest}, {"size", size}};
}

json ConfigJson(const Image& image, const std::vector<std::string>& diff_ids) {
  json config = json::object();
  const ImageConfig& c = image.config;
  if (!c.entrypoint.empty()) config["Entrypoint"] = c.entrypoint;
  if (!c.cmd.empty()) config["Cmd"] = c.cmd;
  if (!c.env.empty()) config["Env"] = c.env;
  if (!c.working_dir.empty()) config["WorkingDir"] = c.working_dir;
  if (!c.user.empty()) config["User"] = c.user;
  if (!c.hostname.empty()) config["Hostname"] = c.hostname;
  json out = {{"architecture", oci::HostArchitecture()},
              {"os", "linux"},
              {"config", config},
              {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  if (!image.created.empty()) out["created"] = image.created;
  return out;
}

}  // namespace

Result<ExportReport> ExportImage(ImageStore& images, const std::string& name,
                                 const std::string& dir, const ExportOptions& options) {
  Image image = LAMINA_TRY(images.Get(name));
  ExportReport report;
  report.name = image.name;
  report.ref = options.ref.empty() ? TagOf(image.name) : options.ref;
  if (!ValidRef(report.ref)) {
    return Fail(EINVAL, "ref \"" + report.ref +
                            "\": use letters, digits and - . _ : @ + /, starting and ending "
                            "with a letter or digit");
  }

  bool merge = false;
  auto st = LAMINA_TRY(LstatIfExists(dir));
  if (!st) {
    LAMINA_CHECK(MakeDirs(dir));
  } else if (!S_ISDIR(st->st_mode)) {
    return Fail(ENOTDIR, dir);
  } else if (PathExists(dir + "/oci-layout")) {
    merge = true;
  } else if (!LAMINA_TRY(ListDir(dir)).empty()) {
    return Fail(EEXIST, dir + " is not empty and not an OCI image layout");
  }
  json index = {
      {"schemaVersion", 2}, {"mediaType", oci::kMediaIndex}, {"manifests", json::array()}};
  if (merge) {
    std::string text = LAMINA_TRY(ReadFile(dir + "/index.json"));
    index = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array()) {
      return Fail(EINVAL, dir + "/index.json: not an OCI image index");
    }
  }
  std::string blobs = dir + "/blobs/sha256";
  LAMINA_CHECK(MakeDirs(blobs));

  Store& store = images.store();
  std::vector<std::string> diff_ids;
  json layers = json::array();
  for (const auto& id : image.layers) {
    auto layer_error = [&](const Error& e) { return Fail(e.Wrap("export layer " + id)); };
    Fd plain = LAMINA_TRY(OpenUnnamedFile(blobs));
    if (auto diff = store.Diff(id, plain.get()); !diff) return layer_error(diff.error());
    if (::lseek(plain.get(), 0, SEEK_SET) != 0) return FailErrno("lseek");
    std::string tmp_path = blobs + "/.tmp-" + RandomId();
    Fd out = LAMINA_TRY(Open(tmp_path, O_WRONLY | O_CREAT | O_EXCL, 0644));
    auto remove_tmp = Defer([&] { ::unlink(tmp_path.c_str()); });
    auto gz = oci::GzipFd(plain.get(), out.get());
    if (!gz) return layer_error(gz.error());
    if (::fsync(out.get()) != 0) return FailErrno("fsync " + tmp_path);
    std::string final_path = blobs + "/" + gz->compressed.digest.substr(7);
    if (::rename(tmp_path.c_str(), final_path.c_str()) != 0)
      return FailErrno("rename " + final_path);
    remove_tmp.Dismiss();
    diff_ids.push_back(gz->uncompressed.digest);
    layers.push_back(Descriptor(oci::kMediaLayerGzip, gz->compressed.digest, gz->compressed.size));
    report.bytes += gz->compressed.size;
  }
  LAMINA_CHECK(FsyncPath(blobs));

  Blob config = LAMINA_TRY(WriteJsonBlob(blobs, ConfigJson(image, diff_ids)));
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", oci::kMediaManifest},
                   {"config", Descriptor(oci::kMediaConfig, config.digest, config.size)},
                   {"layers", layers}};
  Blob manifest_blob = LAMINA_TRY(WriteJsonBlob(blobs, manifest));
  report.manifest_digest = manifest_blob.digest;

  json entry = Descriptor(oci::kMediaManifest, manifest_blob.digest, manifest_blob.size);
  entry["annotations"] = {{std::string(oci::kRefNameAnnotation), report.ref},
                          {std::string(oci::kContainerdNameAnnotation), image.name}};
  entry["platform"] = {{"architecture", oci::HostArchitecture()}, {"os", "linux"}};
  json kept = json::array();
  for (const auto& item : index["manifests"]) {
    bool same_ref =
        item.is_object() && item.contains("annotations") && item["annotations"].is_object() &&
        item["annotations"].value(std::string(oci::kRefNameAnnotation), "") == report.ref;
    if (!same_ref) kept.push_back(item);
  }
  kept.push_back(entry);
  index["manifests"] = kept;
  LAMINA_CHECK(WriteFileAtomic(dir + "/index.json", index.dump(), 0644));
  if (!merge) {
    LAMINA_CHECK(WriteFileAtomic(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})", 0644));
  }
  return report;
}

}  // namespace lamina::store
