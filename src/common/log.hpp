// Structured JSON logs (one object per line on stderr): ts, level, msg, plus fields such
// as payment_id and trace_id. Thread-safe.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ps::log {

using Fields = std::vector<std::pair<std::string, std::string>>;

enum class Level { debug, info, warn, error, off };  // off: only always() (the simulation)
void set_level(Level level);
void write(Level level, std::string_view msg, const Fields& fields = {});
inline void debug(std::string_view m, const Fields& f = {}) { write(Level::debug, m, f); }
inline void info(std::string_view m, const Fields& f = {}) { write(Level::info, m, f); }
inline void warn(std::string_view m, const Fields& f = {}) { write(Level::warn, m, f); }
inline void error(std::string_view m, const Fields& f = {}) { write(Level::error, m, f); }
// Written whatever the level (still tagged "info"): lines an operator must always see,
// such as the address a server listens on.
void always(std::string_view msg, const Fields& fields = {});

// W3C traceparent helpers: a new "00-<32 hex>-<16 hex>-01", and the trace id within one.
std::string new_traceparent();
std::string trace_id_of(std::string_view traceparent);

}  // namespace ps::log
