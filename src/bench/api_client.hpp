// ApiClient: a small synchronous HTTP/1.1 client of the paystream API for the bench's
// set-up and reconciliation (not timed). One keep-alive connection, reopened on failure;
// a GET is retried once on a broken connection. Every call is bounded by timeout_ms.
// Not thread-safe. Beast stays in api_client.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "bench/bench_config.hpp"
#include "common/result.hpp"

namespace ps::bench {

struct HttpAnswer {
  int status = 0;
  std::string body;
};

// The first address of target.host (numeric hosts are returned as they are).
Result<std::string> resolve_target(const Target& target);

class ApiClient {
 public:
  ApiClient(std::string address, Target target, std::string bearer, int64_t timeout_ms = 30000);
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  Result<HttpAnswer> get(const std::string& path_and_query);
  Result<HttpAnswer> post(const std::string& path, const std::string& json_body);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ps::bench
