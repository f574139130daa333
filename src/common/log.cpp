#include "common/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/json/serialize.hpp>
#include <boost/json/object.hpp>

#include "domain/ids.hpp"

namespace ps::log {
namespace {
std::atomic<int> g_level{int(Level::info)};
spdlog::logger& logger() {
  static auto l = [] {
    auto lg = spdlog::stderr_logger_mt("paystream");
    lg->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ",%v})", spdlog::pattern_time_type::utc);
    lg->flush_on(spdlog::level::info);
    return lg;
  }();
  return *l;
}
const char* name(Level l) {
  switch (l) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    case Level::error: return "error";
    case Level::off: break;
  }
  return "info";
}
}  // namespace

void set_level(Level level) { g_level = int(level); }

namespace {
void emit(Level level, std::string_view msg, const Fields& fields) {
  boost::json::object o;
  o["level"] = name(level);
  o["msg"] = msg;
  for (const auto& [k, v] : fields) o[k] = v;
  std::string s = boost::json::serialize(o);
  // The pattern opens the object with "ts" and closes it: drop our own braces.
  logger().info("{}", std::string_view(s).substr(1, s.size() - 2));
}
}  // namespace

void write(Level level, std::string_view msg, const Fields& fields) {
  if (int(level) < g_level.load()) return;
  emit(level, msg, fields);
}

void always(std::string_view msg, const Fields& fields) { emit(Level::info, msg, fields); }

std::string new_traceparent() {
  std::string trace = random_token("", 16), span = random_token("", 8);
  return "00-" + trace + "-" + span + "-01";
}

std::string trace_id_of(std::string_view tp) {
  if (tp.size() >= 35 && tp[2] == '-') return std::string(tp.substr(3, 32));
  return {};
}

}  // namespace ps::log
