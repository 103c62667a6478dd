#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <system_error>
#include <utility>

namespace lamina {

// An error: the exact errno (FUSE and the CLI's exit paths need it) plus a
// human context ("open layers/abc/diff"). The context may be empty on hot
// paths (FUSE lookups); message() then is just strerror.
//
// STYLE.md proposes std::expected<T, std::error_code>; we carry a context
// string beside the code so that the CLI can print a clear error without
// every caller re-wrapping it. See docs/architecture.md.
class Error {
 public:
  Error() = default;
  explicit Error(int code, std::string context = {}) : code_(code), context_(std::move(context)) {}

  // The errno value; never 0 for a real error.
  int code() const { return code_; }
  const std::string& context() const { return context_; }
  std::error_code ec() const { return {code_, std::system_category()}; }
  // "context: strerror(code)" or just strerror(code).
  std::string message() const;

  // Returns a copy with `outer` prepended to the context ("outer: inner").
  Error Wrap(std::string_view outer) const;

 private:
  int code_ = EIO;
  std::string context_;
};

template <class T>
using Result = std::expected<T, Error>;

// Shorthands for returning failures.
inline std::unexpected<Error> Fail(int code, std::string context = {}) {
  return std::unexpected(Error(code, std::move(context)));
}
// Captures errno now; call it right after the failing syscall.
inline std::unexpected<Error> FailErrno(std::string context = {}) {
  int saved = errno;
  return std::unexpected(Error(saved, std::move(context)));
}
inline std::unexpected<Error> Fail(Error e) { return std::unexpected(std::move(e)); }

}  // namespace lamina

// Propagates the error of a Result-returning expression, otherwise yields its value.
// Usage: auto fd = LAMINA_TRY(OpenDir(path));
#define LAMINA_TRY(expr)                                          \
  ({                                                              \
    auto&& lamina_try_result_ = (expr);                           \
    if (!lamina_try_result_) return ::lamina::Fail(std::move(lamina_try_result_).error()); \
    std::move(lamina_try_result_).value();                        \
  })

// For Result<void>.
#define LAMINA_CHECK(expr)                                        \
  do {                                                            \
    auto&& lamina_check_result_ = (expr);                         \
    if (!lamina_check_result_) return ::lamina::Fail(std::move(lamina_check_result_).error()); \
  } while (0)
