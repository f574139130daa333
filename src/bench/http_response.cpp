#include "bench/http_response.hpp"

#include <algorithm>
#include <cstring>

namespace ps::bench {
namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {  // b is lower case
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != b[i]) return false;
  return true;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Does the comma-separated list `v` hold the token `tok` (lower case)?
bool has_token(std::string_view v, std::string_view tok) {
  while (!v.empty()) {
    size_t c = v.find(',');
    if (iequals(trim(v.substr(0, c)), tok)) return true;
    if (c == std::string_view::npos) break;
    v.remove_prefix(c + 1);
  }
  return false;
}

}  // namespace

ParseResult parse_response(std::string_view data, ResponseHead& head, const ResponseLimits& limits) {
  // The end of the header block, searched only within the limit.
  if (data.empty()) return ParseResult::incomplete;
  const std::string_view window = data.substr(0, limits.max_header_bytes);
  const size_t end = window.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    // Malformed as soon as the bytes seen cannot start a response.
    const std::string_view proto = "HTTP/1.";
    if (std::memcmp(data.data(), proto.data(), std::min(data.size(), proto.size())) != 0) return ParseResult::malformed;
    return data.size() >= limits.max_header_bytes ? ParseResult::malformed : ParseResult::incomplete;
  }
  head = ResponseHead{};
  head.header_bytes = end + 4;
  std::string_view block = data.substr(0, end + 2);  // every line ends in CRLF

  // Status line: HTTP/1.x SP 3DIGIT [SP reason] CRLF
  size_t eol = block.find("\r\n");
  std::string_view line = block.substr(0, eol);
  block.remove_prefix(eol + 2);
  if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ')
    return ParseResult::malformed;
  const bool http10 = line[7] == '0';
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return ParseResult::malformed;
    status = status * 10 + (line[i] - '0');
  }
  if (status < 100 || (line.size() > 12 && line[12] != ' ')) return ParseResult::malformed;
  head.status = status;
  head.keep_alive = !http10;

  bool have_length = false;
  uint64_t length = 0;
  while (!block.empty()) {
    eol = block.find("\r\n");
    line = block.substr(0, eol);
    block.remove_prefix(eol + 2);
    if (line.empty() || line.front() == ' ' || line.front() == '\t') return ParseResult::malformed;  // obs-fold
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return ParseResult::malformed;
    const std::string_view name = line.substr(0, colon);
    if (name.find(' ') != std::string_view::npos || name.find('\t') != std::string_view::npos)
      return ParseResult::malformed;
    const std::string_view value = trim(line.substr(colon + 1));
    if (iequals(name, "content-length")) {
      if (value.empty() || value.size() > 19) return ParseResult::malformed;
      uint64_t n = 0;
      for (char ch : value) {
        if (ch < '0' || ch > '9') return ParseResult::malformed;
        n = n * 10 + uint64_t(ch - '0');
      }
      if (have_length && n != length) return ParseResult::malformed;
      have_length = true;
      length = n;
    } else if (iequals(name, "transfer-encoding")) {
      return ParseResult::malformed;  // paystream never chunks; not supported here
    } else if (iequals(name, "connection")) {
      if (has_token(value, "close")) head.keep_alive = false;
      else if (has_token(value, "keep-alive")) head.keep_alive = true;
    } else if (iequals(name, "idempotent-replayed")) {
      head.replayed = value == "true";
    }
  }

  const bool bodyless = status < 200 || status == 204 || status == 304;
  if (bodyless) {
    length = 0;
  } else if (!have_length) {
    return ParseResult::malformed;
  }
  if (length > limits.max_body_bytes) return ParseResult::malformed;
  head.body_bytes = size_t(length);
  return data.size() >= head.total() ? ParseResult::complete : ParseResult::incomplete;
}

}  // namespace ps::bench
