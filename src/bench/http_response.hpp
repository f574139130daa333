// A minimal, bounded HTTP/1.1 response parser for the load worker's hot path.
//
// Why not Beast's http::response_parser: the load worker parsed every answer with a fresh
// Beast parser (one heap node per header field, a std::string body, the composed
// async_read): 3.4 % of the generator's CPU at 20,000/s, ≈ 1 µs per request against a
// 10 µs budget; this parser takes 0.6 % (perf, docs/BENCHMARKS.md "Load generator
// efficiency"). The worker needs only the status, the message length, keep-alive,
// `Idempotent-Replayed` and the body (for the payment id), and paystream always answers
// with Content-Length, so this reads exactly that from the bytes already in the
// connection's buffer, without allocating.
//
// Accepted: `HTTP/1.0` or `HTTP/1.1`, a 3-digit status, header lines `Name: value` ending
// in CRLF, the header block ending in an empty line. The body is Content-Length bytes;
// 1xx, 204 and 304 have none. Anything else is `malformed` (the worker counts an io error
// and reopens the connection): a header block longer than max_header_bytes, a
// Content-Length above max_body_bytes, missing (where a body is expected), not a number
// or given twice with different values, any Transfer-Encoding, obs-fold lines, a line
// without a colon.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ps::bench {

struct ResponseLimits {
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1 << 20;
};

struct ResponseHead {
  int status = 0;
  bool keep_alive = true;     // HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `keep-alive`
  bool replayed = false;      // `Idempotent-Replayed: true`
  size_t header_bytes = 0;    // status line + headers + the empty line
  size_t body_bytes = 0;      // Content-Length
  size_t total() const { return header_bytes + body_bytes; }
};

enum class ParseResult { incomplete, complete, malformed };

// Parses the response at the start of `data`. `complete` when the header block and the
// whole body are in `data` (the message is data[0, head.total()); bytes after it belong
// to the next message); `incomplete` when more bytes are needed (and the limits still
// allow them); `malformed` otherwise. Never reads outside `data`.
ParseResult parse_response(std::string_view data, ResponseHead& head, const ResponseLimits& limits = {});

}  // namespace ps::bench
