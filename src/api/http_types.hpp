// Transport-neutral HTTP request/response types shared by the HTTP server adapter and the
// API layer (no Boost here). Plain values; not synchronised.
// Respond: the completion of one request. Call it exactly once, from any thread; the
// server posts the write onto the connection's strand. Calls after the first are ignored.
#pragma once
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ps {

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

struct HttpRequest {
  std::string method;                           // "GET", "POST", ...
  std::string target;                           // raw request target, e.g. "/v1/payments?limit=2"
  std::string path;                             // percent-decoded path without the query
  std::map<std::string, std::string> query;     // percent-decoded query parameters (last wins)
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string body;
  std::string peer;  // the client's IP address as the server saw it; "" when unknown

  // Case-insensitive header lookup (first match).
  std::optional<std::string_view> header(std::string_view name) const {
    for (const auto& [k, v] : headers)
      if (iequals(k, name)) return std::string_view(v);
    return std::nullopt;
  }
};

struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  std::string body;
  std::string content_type = "application/json";
};

using Respond = std::function<void(HttpResponse)>;

namespace detail {
inline int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace detail

// Percent-decoding; `plus_is_space` for query components. Invalid escapes are kept as is.
inline std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%' && i + 2 < s.size()) {
      int h = detail::hexval(s[i + 1]), l = detail::hexval(s[i + 2]);
      if (h >= 0 && l >= 0) {
        out += char(h * 16 + l);
        i += 2;
        continue;
      }
    }
    out += (plus_is_space && c == '+') ? ' ' : c;
  }
  return out;
}

// Splits a request target into a decoded path and query map.
inline void parse_target(std::string_view target, std::string& path,
                         std::map<std::string, std::string>& query) {
  auto q = target.find('?');
  path = percent_decode(target.substr(0, q), false);
  query.clear();
  if (q == std::string_view::npos) return;
  std::string_view rest = target.substr(q + 1);
  auto frag = rest.find('#');
  if (frag != std::string_view::npos) rest = rest.substr(0, frag);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view part = rest.substr(0, amp);
    if (!part.empty()) {
      auto eq = part.find('=');
      std::string k = percent_decode(part.substr(0, eq), true);
      std::string v = eq == std::string_view::npos ? std::string() : percent_decode(part.substr(eq + 1), true);
      query[std::move(k)] = std::move(v);
    }
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
}

}  // namespace ps
