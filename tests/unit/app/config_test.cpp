#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <CLI/CLI.hpp>

#include "app/config.hpp"

namespace ps::app {
namespace {

TEST(ServeConfig, DefaultsAreValid) {
  ServeConfig c;
  EXPECT_TRUE(c.validate().ok());
  EXPECT_EQ(c.host(), "127.0.0.1");
  EXPECT_EQ(c.port(), 8080);
}

TEST(ServeConfig, RejectsBadValuesNamingTheOption) {
  auto param_of = [](ServeConfig c) { auto r = c.validate(); return r.ok() ? std::string("ok") : r.error().param; };
  ServeConfig c;
  c.listen = "8080";
  EXPECT_EQ(param_of(c), "listen");
  c.listen = "127.0.0.1:70000";
  EXPECT_EQ(param_of(c), "listen");
  c.listen = "127.0.0.1:x";
  EXPECT_EQ(param_of(c), "listen");
  c = {};
  c.acquirer_failure_rate = 1.5;
  EXPECT_EQ(param_of(c), "acquirer_failure_rate");
  c = {};
  c.webhook_retry_schedule_ms = {100, 0};
  EXPECT_EQ(param_of(c), "webhook_retry_schedule_ms");
  c = {};
  c.log_level = "loud";
  EXPECT_EQ(param_of(c), "log_level");
  c = {};
  c.listen = "127.0.0.1:0";
  EXPECT_TRUE(c.validate().ok());
  EXPECT_EQ(c.port(), 0);
}

TEST(ServeConfig, FlagsAndEnvironmentFillTheConfig) {
  ServeConfig c;
  CLI::App app;
  add_serve_options(app, c);
  ::setenv("PAYSTREAM_RATE_LIMIT_BURST", "7", 1);
  const char* argv[] = {"serve", "--listen", "127.0.0.1:0", "--webhook-retry-schedule-ms", "50,60", "--fsync", "off"};
  app.parse(7, const_cast<char**>(argv));
  ::unsetenv("PAYSTREAM_RATE_LIMIT_BURST");
  EXPECT_EQ(c.listen, "127.0.0.1:0");
  EXPECT_EQ(c.rate_limit_burst, 7);
  EXPECT_EQ(c.webhook_retry_schedule_ms, (std::vector<int64_t>{50, 60}));
  EXPECT_FALSE(c.fsync);
}

TEST(AdminKey, GeneratedOnceWithMode0600ThenReused) {
  ::unsetenv("PAYSTREAM_ADMIN_KEY");
  auto dir = std::filesystem::temp_directory_path() / ("ps_admin_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string first = load_or_create_admin_key(dir.string());
  EXPECT_EQ(first.rfind("ak_", 0), 0u);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "admin.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_EQ(load_or_create_admin_key(dir.string()), first);
  ::setenv("PAYSTREAM_ADMIN_KEY", "from-env", 1);
  EXPECT_EQ(load_or_create_admin_key(dir.string()), "from-env");
  ::unsetenv("PAYSTREAM_ADMIN_KEY");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ps::app
