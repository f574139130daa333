// A stand-in for the payments API that answers almost for free, to measure the CPU of
// `paystream bench` itself at rates the real server cannot take (docs/BENCHMARKS.md,
// "Load generator efficiency"). Not part of the product and not built by CMake:
//   g++ -O2 -std=c++20 -o /tmp/cheap_responder bench/cheap_responder.cpp
//   /tmp/cheap_responder 127.0.0.1 18790 &
//   paystream bench --url http://127.0.0.1:18790 --api-key sk_any --no-reconcile ...
// One thread, epoll, keep-alive. Every request gets a `202` shaped like paystream's
// (same headers, a 262-byte payment body) whose id is derived from the Idempotency-Key;
// a key seen before is answered with `Idempotent-Replayed: true` and the same id, so the
// bench's retry and duplicate-pair checks pass (a pair's second answer is a replay).
// Listens on the address given (use 127.0.0.1); runs until killed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace {
struct Conn {
  std::string in, out;
};

size_t ci_find(std::string_view h, std::string_view name) {  // name is lower case
  for (size_t i = 0; i + name.size() <= h.size(); ++i) {
    size_t j = 0;
    while (j < name.size() && std::tolower((unsigned char)h[i + j]) == name[j]) ++j;
    if (j == name.size()) return i;
  }
  return std::string_view::npos;
}

std::string_view header_value(std::string_view head, std::string_view name) {
  size_t p = ci_find(head, name);
  if (p == std::string_view::npos) return {};
  p += name.size();
  while (p < head.size() && head[p] == ' ') ++p;
  size_t e = head.find("\r\n", p);
  return head.substr(p, e == std::string_view::npos ? std::string_view::npos : e - p);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s ADDRESS PORT\n", argv[0]);
    return 2;
  }
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  ::setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(std::atoi(argv[2])));
  if (::inet_pton(AF_INET, argv[1], &a.sin_addr) != 1 || ::bind(ls, (sockaddr*)&a, sizeof a) != 0 ||
      ::listen(ls, 65535) != 0) {
    std::perror("listen");
    return 1;
  }
  int ep = ::epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = ls;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  std::vector<Conn> conns(size_t(rl.rlim_cur > 70000 ? 70000 : rl.rlim_cur));
  std::unordered_set<std::string> seen;
  const std::string body_tail =
      "\",\"object\":\"payment\",\"amount\":1000,\"currency\":\"EUR\",\"status\":\"processing\","
      "\"failure_code\":null,\"amount_refunded\":0,\"description\":null,\"metadata\":{},"
      "\"created\":1796159394475,\"updated\":1796159394475}";
  epoll_event evs[256];
  char buf[65536];
  for (;;) {
    int n = ::epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; ++i) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        for (;;) {
          int c = ::accept4(ls, nullptr, nullptr, SOCK_NONBLOCK);
          if (c < 0) break;
          if (size_t(c) >= conns.size()) {
            ::close(c);
            continue;
          }
          ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event ce{};
          ce.events = EPOLLIN;
          ce.data.fd = c;
          ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
          conns[size_t(c)].in.clear();
        }
        continue;
      }
      Conn& c = conns[size_t(fd)];
      ssize_t r = ::read(fd, buf, sizeof buf);
      if (r <= 0) {
        ::close(fd);
        c.in.clear();
        continue;
      }
      c.in.append(buf, size_t(r));
      c.out.clear();
      for (;;) {
        size_t he = c.in.find("\r\n\r\n");
        if (he == std::string::npos) break;
        std::string_view head(c.in.data(), he + 2);
        size_t len = size_t(std::atol(std::string(header_value(head, "content-length:")).c_str()));
        if (c.in.size() < he + 4 + len) break;
        std::string key(header_value(head, "idempotency-key:"));
        bool replay = !key.empty() && !seen.insert(key).second;
        std::string body = "{\"id\":\"pay_" + std::to_string(std::hash<std::string>{}(key) & 0xffffffffffffULL) + body_tail;
        c.out += "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n";
        if (replay) c.out += "Idempotent-Replayed: true\r\n";
        c.out += "RateLimit-Limit: 10000000\r\nRateLimit-Remaining: 9999999\r\nRateLimit-Reset: 1\r\nContent-Length: ";
        c.out += std::to_string(body.size());
        c.out += "\r\n\r\n";
        c.out += body;
        c.in.erase(0, he + 4 + len);
      }
      if (!c.out.empty() && ::write(fd, c.out.data(), c.out.size()) < 0) {
        ::close(fd);
        c.in.clear();
      }
    }
  }
}
