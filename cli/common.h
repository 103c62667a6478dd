#pragma once

// Pieces every subcommand group shares: opening the store from the global
// options, turning a failed Result into the CommandError the command exits
// with, reporting failures over several operands, and plain-text tables.

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cli/cli.h"
#include "common/result.h"
#include "store/store.h"

namespace lamina::cli {

// How an error becomes the text after "lamina: ".
using ErrorText = std::string (*)(const Error&);

// The value of `result`; on failure throws CommandError(describe(error),
// status). The default text is store::Describe's.
template <class T>
T OrThrow(Result<T>&& result, int status = 1, ErrorText describe = &store::Describe) {
  if (!result) throw CommandError(describe(result.error()), status);
  if constexpr (!std::is_void_v<T>) return std::move(*result);
}

// The store's open options from --root and --driver.
store::OpenOptions StoreOptions(const GlobalOptions& global);

// Opens (creating on first use) the store of --root with --driver; throws
// CommandError(describe(error), status) when that fails.
std::unique_ptr<store::Store> OpenStore(const GlobalOptions& global, int status = 1,
                                        ErrorText describe = &store::Describe);

// The failures of one command over several operands (`rm A B C`): each
// operand is tried; every failure but the last is printed to stderr as
// "lamina: message" when the next one arrives, the last is thrown by
// ThrowIfAny, so the command exits 1 after trying them all.
class Failures {
 public:
  void Add(std::string message);
  void ThrowIfAny() const;

 private:
  std::string last_;
};

// Prints rows as columns separated by two spaces, each as wide as its
// widest cell (the first row is usually the header); no trailing padding.
void PrintColumns(const std::vector<std::vector<std::string>>& rows);

// "512 B", "1.5 KiB", "3.0 MiB" (binary units, one decimal above bytes).
std::string HumanSize(uint64_t bytes);

}  // namespace lamina::cli
