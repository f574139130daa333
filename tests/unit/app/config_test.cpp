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
  c.webhook_allow_cidrs = {"127.0.0.0/8", "10.0.0.0/33"};
  EXPECT_EQ(param_of(c), "webhook_allow_cidrs");
  EXPECT_NE(c.validate().error().message.find("10.0.0.0/33"), std::string::npos);
  c.webhook_allow_cidrs = {"localhost"};
  EXPECT_EQ(param_of(c), "webhook_allow_cidrs");
  c = {};
  c.webhook_resolve_timeout_ms = 0;
  EXPECT_EQ(param_of(c), "webhook_resolve_timeout_ms");
  c = {};
  c.log_level = "loud";
  EXPECT_EQ(param_of(c), "log_level");
  c = {};
  c.max_connections = 1'000'000;  // above the open-files limit minus the reserve
  EXPECT_EQ(param_of(c), "max_connections");
  c = {};
  c.max_connections = 100;
  c.max_connections_per_address = 101;
  EXPECT_EQ(param_of(c), "max_connections_per_address");
  c = {};
  c.stage_batch_max = 0;
  EXPECT_EQ(param_of(c), "stage_batch_max");
  c = {};
  c.listen = "127.0.0.1:0";
  EXPECT_TRUE(c.validate().ok());
  EXPECT_EQ(c.port(), 0);
}

TEST(AdminKey, ShorterThanTheMinimumIsAConfigError) {
  auto short_key = check_admin_key("adm_short");
  ASSERT_FALSE(short_key.ok());
  EXPECT_EQ(short_key.error().param, "admin_key");
  EXPECT_NE(short_key.error().message.find("at least 24"), std::string::npos) << short_key.error().message;
  EXPECT_FALSE(check_admin_key("").ok());
  EXPECT_FALSE(check_admin_key(std::string(23, 'k')).ok());
  EXPECT_TRUE(check_admin_key(std::string(24, 'k')).ok());
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

TEST(ServeConfig, WebhookAllowListFromFlagOrEnvironment) {
  {
    ServeConfig c;
    EXPECT_TRUE(c.webhook_policy().allow_list().empty());   // default: global addresses only
    EXPECT_FALSE(c.webhook_policy().allows(IpAddress::v4(127, 0, 0, 1)));
    CLI::App app;
    add_serve_options(app, c);
    const char* argv[] = {"serve", "--webhook-allow-cidrs", "127.0.0.0/8,::1/128"};
    app.parse(3, const_cast<char**>(argv));
    ASSERT_TRUE(c.validate().ok());
    EXPECT_EQ(c.webhook_policy().allow_list().size(), 2u);
    EXPECT_TRUE(c.webhook_policy().allows(IpAddress::v4(127, 0, 0, 1)));
    EXPECT_FALSE(c.webhook_policy().allows(IpAddress::v4(10, 0, 0, 1)));
  }
  {
    ServeConfig c;
    CLI::App app;
    add_webhook_target_options(app, c);   // the gateway's and the worker's
    ::setenv("PAYSTREAM_WEBHOOK_ALLOW_CIDRS", "10.0.0.0/8,fd00::/8", 1);
    const char* argv[] = {"gateway"};
    app.parse(1, const_cast<char**>(argv));
    ::unsetenv("PAYSTREAM_WEBHOOK_ALLOW_CIDRS");
    EXPECT_EQ(c.webhook_allow_cidrs, (std::vector<std::string>{"10.0.0.0/8", "fd00::/8"}));
    EXPECT_TRUE(c.webhook_policy().allows(IpAddress::v4(10, 1, 2, 3)));
  }
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
