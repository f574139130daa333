#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <set>
#include <sstream>

#include "api/api.hpp"

using namespace ps;

namespace {
boost::json::value load_spec() {
  std::ifstream in(std::string(PS_SOURCE_DIR) + "/openapi/openapi.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return boost::json::parse(ss.str());
}
std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

TEST(OpenApi, RoutesMatchTheSpecBothWays) {
  auto spec = load_spec();
  EXPECT_EQ(spec.at("openapi").as_string().subview().substr(0, 3), "3.1");
  std::set<std::string> in_spec, in_code;
  for (const auto& [path, item] : spec.at("paths").as_object())
    for (const auto& [method, op] : item.as_object())
      if (method == "get" || method == "post" || method == "delete" || method == "put" || method == "patch")
        in_spec.insert(std::string(method) + " " + std::string(path));
  for (const auto& r : Api::routes()) in_code.insert(lower(r.method) + " " + r.path);
  EXPECT_EQ(in_spec, in_code);
  EXPECT_EQ(in_code.size(), Api::routes().size());
}

TEST(OpenApi, ErrorSchemaAndResponsesDeclared) {
  auto spec = load_spec();
  const auto& schemas = spec.at("components").at("schemas").as_object();
  ASSERT_TRUE(schemas.contains("Error"));
  for (const char* s : {"Payment", "Refund", "Event", "WebhookEndpoint", "PaymentCreate"})
    EXPECT_TRUE(schemas.contains(s)) << s;
  // Every operation declares at least one success answer.
  for (const auto& [path, item] : spec.at("paths").as_object())
    for (const auto& [method, op] : item.as_object()) {
      if (!op.is_object() || !op.as_object().contains("responses")) continue;
      bool success = false;
      for (const auto& [code, resp] : op.at("responses").as_object()) success = success || code.starts_with("2");
      EXPECT_TRUE(success) << method << " " << path;
    }
}
