#include "domain/money.hpp"

#include <algorithm>

namespace ps {
namespace {
// ISO 4217 active codes with their minor units (a pragmatic subset of the full list,
// covering every commonly settled currency; the table is the single source of truth).
const std::vector<CurrencyInfo> kCurrencies = {
    {"AED", 2}, {"ARS", 2}, {"AUD", 2}, {"BGN", 2}, {"BHD", 3}, {"BRL", 2}, {"CAD", 2},
    {"CHF", 2}, {"CLP", 0}, {"CNY", 2}, {"COP", 2}, {"CZK", 2}, {"DKK", 2}, {"EGP", 2},
    {"EUR", 2}, {"GBP", 2}, {"HKD", 2}, {"HUF", 2}, {"IDR", 2}, {"ILS", 2}, {"INR", 2},
    {"ISK", 0}, {"JOD", 3}, {"JPY", 0}, {"KES", 2}, {"KRW", 0}, {"KWD", 3}, {"MAD", 2},
    {"MXN", 2}, {"MYR", 2}, {"NGN", 2}, {"NOK", 2}, {"NZD", 2}, {"OMR", 3}, {"PEN", 2},
    {"PHP", 2}, {"PKR", 2}, {"PLN", 2}, {"QAR", 2}, {"RON", 2}, {"RSD", 2}, {"SAR", 2},
    {"SEK", 2}, {"SGD", 2}, {"THB", 2}, {"TND", 3}, {"TRY", 2}, {"TWD", 2}, {"UAH", 2},
    {"UGX", 0}, {"USD", 2}, {"VND", 0}, {"XAF", 0}, {"XOF", 0}, {"ZAR", 2},
};
}  // namespace

std::optional<CurrencyInfo> find_currency(std::string_view code) {
  auto it = std::lower_bound(kCurrencies.begin(), kCurrencies.end(), code,
                             [](const CurrencyInfo& c, std::string_view k) { return c.code < k; });
  if (it == kCurrencies.end() || it->code != code) return std::nullopt;
  return *it;
}

const std::vector<CurrencyInfo>& all_currencies() { return kCurrencies; }

bool add_overflows(int64_t a, int64_t b, int64_t* out) { return __builtin_add_overflow(a, b, out); }

}  // namespace ps
