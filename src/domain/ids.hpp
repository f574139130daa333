// Identifiers and hashing helpers (OpenSSL underneath).
#pragma once
#include <string>
#include <string_view>

namespace ps {

std::string sha256_hex(std::string_view data);
std::string hmac_sha256(std::string_view key, std::string_view data);  // raw 32 bytes
std::string base64_encode(std::string_view raw);
std::string base64_decode(std::string_view b64);  // empty on invalid input
std::string random_bytes(size_t n);
std::string random_token(std::string_view prefix, size_t bytes);  // prefix + hex

// Deterministic id: prefix + first 24 hex chars of SHA-256(parts joined by '|').
std::string deterministic_id(std::string_view prefix, std::string_view a, std::string_view b = {});

// The payment id of (merchant, idempotency key): same inputs, same id, for ever.
inline std::string payment_id_for(std::string_view merchant_id, std::string_view idem_key) {
  return deterministic_id("pay_", merchant_id, idem_key);
}
inline std::string refund_id_for(std::string_view merchant_id, std::string_view idem_key) {
  return deterministic_id("re_", merchant_id, idem_key);
}

}  // namespace ps
