#include "adapters/http/host_resolver.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>

namespace ps {

Result<std::vector<IpAddress>> getaddrinfo_lookup(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) return Error::unavailable("resolve_failed", "cannot resolve " + host + ": " + gai_strerror(rc));
  std::vector<IpAddress> out;
  for (addrinfo* p = res; p; p = p->ai_next) {
    IpAddress a;
    if (p->ai_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(p->ai_addr);
      std::memcpy(a.bytes.data(), &sin->sin_addr, 4);
    } else if (p->ai_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(p->ai_addr);
      a.family = IpAddress::Family::v6;
      std::memcpy(a.bytes.data(), &sin6->sin6_addr, 16);
    } else {
      continue;
    }
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  ::freeaddrinfo(res);
  if (out.empty()) return Error::unavailable("resolve_failed", "no addresses for " + host);
  return out;
}

SystemResolver::SystemResolver(size_t max_in_flight, Lookup lookup)
    : max_in_flight_(std::max<size_t>(1, max_in_flight)),
      lookup_(lookup ? std::move(lookup) : Lookup(getaddrinfo_lookup)),
      in_flight_(std::make_shared<std::atomic<size_t>>(0)) {}

namespace {
struct Pending {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::optional<Result<std::vector<IpAddress>>> result;
};
}  // namespace

Result<std::vector<IpAddress>> SystemResolver::resolve(const std::string& host, std::chrono::milliseconds timeout) {
  if (in_flight_->fetch_add(1) >= max_in_flight_) {
    in_flight_->fetch_sub(1);
    return Error::unavailable("resolve_busy", "too many DNS lookups pending; not resolving " + host);
  }
  auto pending = std::make_shared<Pending>();
  try {
    // The thread owns copies of everything it touches: it may outlive this call and the resolver.
    std::thread([pending, host, lookup = lookup_, counter = in_flight_] {
      auto r = lookup(host);
      {
        std::lock_guard lk(pending->mu);
        pending->result.emplace(std::move(r));
        pending->done = true;
      }
      pending->cv.notify_all();
      counter->fetch_sub(1);
    }).detach();
  } catch (const std::system_error& e) {
    in_flight_->fetch_sub(1);
    return Error::unavailable("resolve_busy", std::string("cannot start a DNS lookup: ") + e.what());
  }
  std::unique_lock lk(pending->mu);
  if (!pending->cv.wait_for(lk, std::max(timeout, std::chrono::milliseconds(0)), [&] { return pending->done; }))
    return Error::timeout("DNS lookup of " + host + " timed out after " + std::to_string(timeout.count()) + " ms");
  return std::move(*pending->result);
}

SystemResolver& system_resolver() {
  static SystemResolver r;
  return r;
}

}  // namespace ps
