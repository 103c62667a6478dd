#include "cli/common.h"

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace lamina::cli {

store::OpenOptions StoreOptions(const GlobalOptions& global) {
  store::OpenOptions options;
  options.root = global.root;
  options.driver = global.driver;
  return options;
}

std::unique_ptr<store::Store> OpenStore(const GlobalOptions& global, int status,
                                        ErrorText describe) {
  return OrThrow(store::Store::Open(StoreOptions(global)), status, describe);
}

void Failures::Add(std::string message) {
  if (!last_.empty()) std::cerr << "lamina: " << last_ << "\n";
  last_ = std::move(message);
}

void Failures::ThrowIfAny() const {
  if (!last_.empty()) throw CommandError(last_);
}

void PrintColumns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

std::string HumanSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  std::ostringstream out;
  if (unit == 0) {
    out << bytes << " B";
  } else {
    out << std::fixed << std::setprecision(1) << value << " " << kUnits[unit];
  }
  return out.str();
}

}  // namespace lamina::cli
