// Money: int64 minor units plus an ISO 4217 alpha-3 currency. Never floating point.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ps {

struct CurrencyInfo {
  std::string_view code;   // "EUR"
  int minor_units;         // 2 for EUR, 0 for JPY, 3 for BHD
};

// Looks up an ISO 4217 alpha-3 code (upper case, exactly as sent). nullopt if unknown.
std::optional<CurrencyInfo> find_currency(std::string_view code);
// All known currencies (for docs and tests).
const std::vector<CurrencyInfo>& all_currencies();

struct Money {
  int64_t amount_minor = 0;
  std::string currency;
};

// Checked arithmetic: false on overflow.
bool add_overflows(int64_t a, int64_t b, int64_t* out);

}  // namespace ps
