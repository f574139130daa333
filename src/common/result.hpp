// Result<T>: the value-or-error type used on every request and event path.
// Errors carry an HTTP-facing type/code/message/param and whether a retry may help.
#pragma once
#include <string>
#include <utility>
#include <variant>

namespace ps {

enum class ErrorKind {
  invalid_request,  // 400: malformed input, names the param
  unauthorized,     // 401
  not_found,        // 404
  conflict,         // 409
  payload_too_large,// 413
  unsupported_media,// 415
  unprocessable,    // 422
  rate_limited,     // 429
  unavailable,      // 503 (draining, dependency down) — retryable
  timeout,          // dependency timed out — retryable
  internal,         // a bug or an I/O failure — retryable at the caller's discretion
};

struct Error {
  ErrorKind kind = ErrorKind::internal;
  std::string code;     // machine-readable, e.g. "amount_invalid", "idempotency_key_in_use"
  std::string message;  // human-readable, names the problem
  std::string param;    // the offending field, if any
  bool retryable = false;

  static Error invalid(std::string code, std::string message, std::string param = {}) {
    return {ErrorKind::invalid_request, std::move(code), std::move(message), std::move(param), false};
  }
  static Error not_found(std::string message) {
    return {ErrorKind::not_found, "resource_missing", std::move(message), {}, false};
  }
  static Error conflict(std::string code, std::string message) {
    return {ErrorKind::conflict, std::move(code), std::move(message), {}, false};
  }
  static Error unprocessable(std::string code, std::string message, std::string param = {}) {
    return {ErrorKind::unprocessable, std::move(code), std::move(message), std::move(param), false};
  }
  static Error unavailable(std::string code, std::string message) {
    return {ErrorKind::unavailable, std::move(code), std::move(message), {}, true};
  }
  static Error timeout(std::string message) {
    return {ErrorKind::timeout, "timeout", std::move(message), {}, true};
  }
  static Error internal(std::string message) {
    return {ErrorKind::internal, "internal_error", std::move(message), {}, true};
  }
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT(implicit)
  Result(Error error) : v_(std::move(error)) {}        // NOLINT(implicit)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT(implicit)
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool ok_ = true;
};

inline Result<void> ok() { return {}; }

}  // namespace ps
