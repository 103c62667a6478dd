#include "store/containers.h"

#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "store/lock.h"
#include "store/metadata.h"

namespace lamina::store {

namespace {

using nlohmann::json;

bool ValidId(const std::string& id) {
  return !id.empty() && id.size() <= 128 &&
         std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '_' || c == '.' || c == '-';
         }) &&
         id[0] != '.' && id[0] != '-' && id[0] != '_';
}

}  // namespace

Result<void> ValidateContainerName(const std::string& name) {
  if (!ValidId(name)) {
    return Fail(EINVAL, "bad container name '" + name +
                            "' (letters, digits, '_', '.', '-'; starting with a letter or digit; "
                            "at most 128)");
  }
  return {};
}

std::string FormatContainerRecord(const ContainerRecord& r) {
  json j = {{"id", r.id},
            {"name", r.name},
            {"image", r.image},
            {"image_layers", r.image_layers},
            {"layer", r.layer},
            {"command", r.command},
            {"created", r.created},
            {"state", r.state},
            {"mounted", r.mounted},
            {"launcher_pid", r.launcher_pid},
            {"pid", r.pid},
            {"exit_status", r.exit_status},
            {"finished", r.finished},
            {"cgroups", r.cgroups}};
  return j.dump(2) + "\n";
}

Result<ContainerRecord> ParseContainerRecord(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Fail(EINVAL, "container.json: not a JSON object");
  ContainerRecord r;
  try {
    r.id = j.at("id").get<std::string>();
    r.name = j.value("name", "");
    r.image = j.value("image", "");
    r.image_layers = j.value("image_layers", std::vector<std::string>{});
    r.layer = j.at("layer").get<std::string>();
    r.command = j.value("command", std::vector<std::string>{});
    r.created = j.value("created", "");
    r.state = j.value("state", "");
    r.mounted = j.value("mounted", false);
    r.launcher_pid = j.value("launcher_pid", 0);
    r.pid = j.value("pid", 0);
    r.exit_status = j.value("exit_status", -1);
    r.finished = j.value("finished", "");
    r.cgroups = j.value("cgroups", std::vector<std::string>{});
  } catch (const json::exception& e) {
    return Fail(EINVAL, std::string("container.json: ") + e.what());
  }
  if (!ValidId(r.id)) return Fail(EINVAL, "container.json: bad id");
  return r;
}

Result<ContainerLock> ContainerStore::Create(const ContainerRecord& record) {
  if (!ValidId(record.id)) return Fail(EINVAL, "bad container id '" + record.id + "'");
  LAMINA_CHECK(MakeDirs(store_.root() + "/containers", 0700));
  auto guard = LAMINA_TRY(StoreLock::Acquire(store_.root() + "/containers/lock", LockMode::kExclusive));
  if (!record.name.empty()) {
    for (const auto& other : LAMINA_TRY(List())) {
      if (other.name == record.name) {
        return Fail(EEXIST, "container " + record.name + ": the name is taken (lamina rm " +
                                record.name + " frees it)");
      }
    }
  }
  std::string dir = Dir(record.id);
  if (::mkdir(dir.c_str(), 0700) != 0) return FailErrno("mkdir " + dir);
  Fd lock = LAMINA_TRY(Open(dir + "/lock", O_RDWR | O_CREAT, 0600));
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) return FailErrno("lock container " + record.id);
  auto written = WriteFileAtomic(dir + "/container.json", FormatContainerRecord(record), 0600);
  if (!written) {
    (void)RemoveTree(dir);
    return Fail(written.error());
  }
  return ContainerLock(std::move(lock));
}

Result<void> ContainerStore::Update(const ContainerRecord& record) {
  return WriteFileAtomic(Dir(record.id) + "/container.json", FormatContainerRecord(record), 0600);
}

Result<void> ContainerStore::Delete(const std::string& id) {
  if (!ValidId(id)) return Fail(EINVAL, "bad container id '" + id + "'");
  return RemoveTree(Dir(id));
}

Result<std::vector<ContainerRecord>> ContainerStore::List() {
  std::vector<ContainerRecord> records;
  std::string dir = store_.root() + "/containers";
  if (!PathExists(dir)) return records;
  for (const auto& id : LAMINA_TRY(ListDir(dir))) {
    if (id == "lock" || !ValidId(id)) continue;
    auto text = ReadFile(Dir(id) + "/container.json");
    if (!text) continue;  // being made or removed right now
    auto record = ParseContainerRecord(*text);
    if (record) records.push_back(std::move(*record));
  }
  std::sort(records.begin(), records.end(),
            [](const auto& a, const auto& b) { return a.created < b.created; });
  return records;
}

Result<ContainerRecord> ContainerStore::Find(const std::string& key) {
  auto records = LAMINA_TRY(List());
  for (const auto& r : records) {
    if (r.name == key || r.id == key) return r;
  }
  const ContainerRecord* match = nullptr;
  for (const auto& r : records) {
    if (key.size() >= 4 && r.id.starts_with(key)) {
      if (match != nullptr) return Fail(EINVAL, "container " + key + ": ambiguous id prefix");
      match = &r;
    }
  }
  if (match != nullptr) return *match;
  return Fail(ENOENT, "container " + key);
}

bool ContainerStore::Running(const std::string& id) {
  auto lock = Open(Dir(id) + "/lock", O_RDWR);
  if (!lock) return false;
  if (::flock(lock->get(), LOCK_SH | LOCK_NB) == 0) return false;
  return errno == EWOULDBLOCK;
}

Result<std::vector<std::string>> ContainerStore::CleanStale(
    const std::function<void(const std::vector<std::string>&)>& remove_cgroups) {
  std::vector<std::string> cleaned;
  std::string dir = store_.root() + "/containers";
  if (!PathExists(dir)) return cleaned;
  auto guard = LAMINA_TRY(StoreLock::Acquire(dir + "/lock", LockMode::kExclusive));
  for (auto record : LAMINA_TRY(List())) {
    if (record.state == "exited") continue;
    // Hold the container's lock while cleaning: a live launcher holds it.
    auto lock = Open(Dir(record.id) + "/lock", O_RDWR);
    if (lock && ::flock(lock->get(), LOCK_EX | LOCK_NB) != 0) continue;
    if (!record.cgroups.empty() && remove_cgroups) remove_cgroups(record.cgroups);
    if (record.mounted) {
      if (auto count = store_.MountCount(record.layer); count && *count > 0) {
        (void)store_.Unmount(record.layer);
      }
      record.mounted = false;
    }
    record.cgroups.clear();
    if (record.name.empty()) {
      auto removed = store_.RemoveLayer(record.layer);
      if (!removed && removed.error().code() != ENOENT) continue;  // try again next time
      (void)Delete(record.id);
    } else {
      record.state = "exited";
      record.exit_status = -1;
      record.finished = NowRfc3339();
      (void)Update(record);
    }
    cleaned.push_back(record.id);
  }
  return cleaned;
}

}  // namespace lamina::store
