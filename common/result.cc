#include "common/result.h"

#include <cstring>

namespace lamina {

std::string Error::message() const {
  std::string text = std::strerror(code_);
  if (context_.empty()) return text;
  return context_ + ": " + text;
}

Error Error::Wrap(std::string_view outer) const {
  if (context_.empty()) return Error(code_, std::string(outer));
  std::string joined(outer);
  joined += ": ";
  joined += context_;
  return Error(code_, std::move(joined));
}

}  // namespace lamina
