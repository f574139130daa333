// The system resolver (getaddrinfo) with a deadline. getaddrinfo has no timeout, so each
// lookup runs on a helper thread and resolve() waits at most `timeout` for it: a lookup
// still running then is abandoned (its thread finishes on its own and frees its state).
// At most `max_in_flight` lookups run at once (abandoned ones included); beyond that
// resolve() fails at once with "resolve_busy", so a slow DNS server cannot pile up threads.
// Every address family is returned (no AI_ADDRCONFIG): a check of the addresses of a name
// sees all of them. Thread-safety: thread-safe.
#pragma once
#include <atomic>
#include <functional>
#include <memory>

#include "ports/external.hpp"

namespace ps {

class SystemResolver final : public HostResolver {
 public:
  // The blocking lookup (getaddrinfo by default; tests replace it). Returns the addresses,
  // or an error message.
  using Lookup = std::function<Result<std::vector<IpAddress>>(const std::string& host)>;

  explicit SystemResolver(size_t max_in_flight = 64, Lookup lookup = {});
  Result<std::vector<IpAddress>> resolve(const std::string& host, std::chrono::milliseconds timeout) override;
  size_t in_flight() const { return in_flight_->load(); }

 private:
  const size_t max_in_flight_;
  Lookup lookup_;
  std::shared_ptr<std::atomic<size_t>> in_flight_;
};

// getaddrinfo(host, SOCK_STREAM), every family, duplicates removed, in the resolver's order.
Result<std::vector<IpAddress>> getaddrinfo_lookup(const std::string& host);

// The process-wide SystemResolver of webhook URLs (creation and delivery). http_post, for
// operator-configured URLs, uses one of its own.
SystemResolver& system_resolver();

}  // namespace ps
