#pragma once

// A store consistency check for fault tests: after a crash, a full disk or
// concurrent use, the store directory must still be whole.

#include <string>
#include <vector>

namespace lamina::test {

// What is wrong with the store at `root`, one line each; empty when it is
// consistent:
//   - every entry of layers/ is a layer directory with a readable
//     layer.json in state "ready", its diff/ and, when it has a parent, a
//     parent that is itself such a layer;
//   - image records (images/*.json) name existing, ready layers, each on
//     the one before;
//   - container records (containers/*/container.json) name existing layers;
//   - no temporary file of an atomic write (".NAME.tmp-...") is left in the
//     store's own directories.
// Call it with no lamina process at work on the store.
std::vector<std::string> StoreProblems(const std::string& root);

// The ids of the ready layers in layers/, sorted.
std::vector<std::string> StoreLayerIds(const std::string& root);

// Why `driver` cannot be used for a store at `probe_root` ("" when it can),
// from `lamina info --json`.
std::string DriverUnusable(const std::string& driver, const std::string& probe_root);

}  // namespace lamina::test
