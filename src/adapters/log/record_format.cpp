#include "adapters/log/record_format.hpp"

#include <boost/crc.hpp>
#include <cstring>
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace ps::wal {
namespace {

// CRC-32C: polynomial 0x1EDC6F41, reflected, init and final xor 0xFFFFFFFF.
using Crc32c = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

void put_u32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = char((v >> (8 * i)) & 0xFF);
}
void put_u64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = char((v >> (8 * i)) & 0xFF);
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(p[i])) << (8 * i);
  return v;
}
uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(p[i])) << (8 * i);
  return v;
}

// Offsets inside the header.
constexpr size_t kOffLength = 4, kOffLsn = 8, kOffBatch = 16, kOffType = 24, kOffCrc = 25;

// The CPU's CRC-32C instruction (SSE 4.2) where there is one: the log checksums every
// byte it writes and reads, and the table-driven loop cost ~2 % of the server's CPU under
// load. Same polynomial and bit order as Crc32c (the records on disk do not change);
// boost's table stays the fallback, and the tests compare the two.
#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc_update_hw(uint32_t state, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t c = state;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  uint32_t c32 = uint32_t(c);
  for (; n > 0; --n, ++p) c32 = _mm_crc32_u8(c32, *p);
  return c32;
}
const bool kHardwareCrc = __builtin_cpu_supports("sse4.2");
#else
uint32_t crc_update_hw(uint32_t, const void*, size_t) { return 0; }
const bool kHardwareCrc = false;
#endif

uint32_t frame_crc(const char* header, std::string_view payload) {
  // Covers length .. type (the bytes between magic and crc), then the payload.
  if (kHardwareCrc) {
    uint32_t c = crc_update_hw(0xFFFFFFFFu, header + kOffLength, kOffCrc - kOffLength);
    return crc_update_hw(c, payload.data(), payload.size()) ^ 0xFFFFFFFFu;
  }
  Crc32c c;
  c.process_bytes(header + kOffLength, kOffCrc - kOffLength);
  c.process_bytes(payload.data(), payload.size());
  return c.checksum();
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  if (kHardwareCrc) return crc_update_hw(0xFFFFFFFFu, data, n) ^ 0xFFFFFFFFu;
  return crc32c_portable(data, n);
}

uint32_t crc32c_portable(const void* data, size_t n) {
  Crc32c c;
  c.process_bytes(data, n);
  return c.checksum();
}

void encode_record(std::string& out, const RecordHeader& h, std::string_view payload) {
  char header[kHeaderBytes];
  put_u32(header, kMagic);
  put_u32(header + kOffLength, uint32_t(payload.size()));
  put_u64(header + kOffLsn, h.lsn);
  put_u64(header + kOffBatch, h.batch_lsn);
  header[kOffType] = char(h.type);
  put_u32(header + kOffCrc, frame_crc(header, payload));
  out.append(header, kHeaderBytes);
  out.append(payload.data(), payload.size());
}

Frame decode_record(std::string_view buf) {
  Frame f;
  if (buf.size() < kHeaderBytes) return f;   // end
  const char* h = buf.data();
  bool zero = true;
  for (size_t i = 0; i < kHeaderBytes && zero; ++i) zero = h[i] == 0;
  if (zero) return f;   // end: the zero-filled rest of the segment
  f.status = FrameStatus::bad;
  if (get_u32(h) != kMagic) return f;
  f.header.length = get_u32(h + kOffLength);
  f.header.lsn = get_u64(h + kOffLsn);
  f.header.batch_lsn = get_u64(h + kOffBatch);
  f.header.type = uint8_t(h[kOffType]);
  if (f.header.length == 0 || f.header.length > kMaxPayloadBytes || f.header.type == 0) return f;
  if (buf.size() - kHeaderBytes < f.header.length) return f;
  std::string_view payload(h + kHeaderBytes, f.header.length);
  if (frame_crc(h, payload) != get_u32(h + kOffCrc)) return f;
  f.status = FrameStatus::ok;
  f.payload = payload;
  f.frame_bytes = kHeaderBytes + f.header.length;
  return f;
}

}  // namespace ps::wal
