#pragma once

// Containers of `lamina run`: <root>/containers/<id>/container.json, written
// atomically. Every run has a record while it runs; a run without --name
// removes its record (and its layer) at the end, a named one keeps both for
// `lamina commit`, `lamina ps` and `lamina rm`.
//
// Crash safety: a running launcher holds flock(LOCK_EX) on
// <root>/containers/<id>/lock for as long as it lives. A record whose lock
// is free but whose state is still "created" or "running" belongs to a
// launcher that was killed (SIGKILL, power loss): CleanStale — called at the
// start of every `lamina run`, `ps`, `rm` and `commit` — removes the
// cgroups it left, drops the layer's mount reference and, unless the
// container was named, removes its layer and its record; a named one is
// marked "exited" with status -1 ("unknown").

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "store/store.h"

namespace lamina::store {

struct ContainerRecord {
  std::string id;      // = the container's layer id
  std::string name;    // "" for an unnamed (removed at the end) run
  std::string image;   // the image name it ran
  std::vector<std::string> image_layers;  // that image's layers then, base first
  std::string layer;   // the writable layer
  std::vector<std::string> command;
  std::string created;  // RFC 3339
  std::string state;    // "created", "running", "exited"
  bool mounted = false;  // the launcher holds one mount reference of the layer
  pid_t launcher_pid = 0;
  pid_t pid = 0;        // the container's PID 1 on the host
  int exit_status = -1;  // when exited; -1 = unknown (the launcher was killed)
  std::string finished;
  std::vector<std::string> cgroups;  // cgroup directories while running
};

Result<ContainerRecord> ParseContainerRecord(std::string_view text);
std::string FormatContainerRecord(const ContainerRecord& record);

// Names: [a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}; EINVAL with the rule otherwise.
Result<void> ValidateContainerName(const std::string& name);

// The flock a live launcher holds; released by the destructor.
class ContainerLock {
 public:
  ContainerLock() = default;
  explicit ContainerLock(Fd fd) : fd_(std::move(fd)) {}
  bool held() const { return fd_.valid(); }

 private:
  Fd fd_;
};

class ContainerStore {
 public:
  explicit ContainerStore(Store& store) : store_(store) {}

  // Creates the record of a new container (EEXIST "container NAME" when the
  // name is taken) and takes its lock.
  Result<ContainerLock> Create(const ContainerRecord& record);
  // Rewrites a record.
  Result<void> Update(const ContainerRecord& record);
  // Removes a record (not its layer).
  Result<void> Delete(const std::string& id);
  // Every record, oldest first.
  Result<std::vector<ContainerRecord>> List();
  // By name or id (or a unique id prefix); ENOENT "container X".
  Result<ContainerRecord> Find(const std::string& name_or_id);
  // Whether a live launcher holds the container's lock.
  bool Running(const std::string& id);

  // Cleans what killed launchers left behind (see above); returns the ids
  // handled. `remove_cgroups` is called with the recorded cgroup dirs.
  Result<std::vector<std::string>> CleanStale(
      const std::function<void(const std::vector<std::string>&)>& remove_cgroups);

 private:
  std::string Dir(const std::string& id) const { return store_.root() + "/containers/" + id; }
  Store& store_;
};

}  // namespace lamina::store
