// The report's generator CPU per request: (workers + parent CPU) / requests sent, in the
// JSON and in the human summary.
#include "bench/report.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace ps::bench {
namespace {

TEST(Report, GeneratorCpuPerRequest) {
  ValidConfig cfg;
  cfg.steps = {{1000, 10}};
  RunOutcome o;
  o.cfg = &cfg;
  EXPECT_EQ(o.generator_cpu_us_per_request(), 0.0);  // nothing sent
  o.merged.requests = 200'000;
  o.generator_cpu_s = 1.5;
  o.parent_cpu_s = 0.5;
  EXPECT_DOUBLE_EQ(o.generator_cpu_us_per_request(), 10.0);
  const std::string j = report_json(o);
  const std::string name = "\"generator_cpu_us_per_request\":";
  const size_t at = j.find(name);
  ASSERT_NE(at, std::string::npos) << j;
  EXPECT_DOUBLE_EQ(std::strtod(j.c_str() + at + name.size(), nullptr), 10.0) << j;
  EXPECT_NE(report_text(o).find("10.0 µs per request"), std::string::npos) << report_text(o);
}

}  // namespace
}  // namespace ps::bench
