// The segment log's on-disk record frame. Little-endian, no padding:
//
//   magic     u32   0x474C5350 ("PSLG" on disk)
//   length    u32   payload bytes (1 .. kMaxPayloadBytes)
//   lsn       u64   log sequence number: +1 per record, continuous across segments
//   batch_lsn u64   lsn of the first record of the group commit (one write + one fsync)
//                   that carried this record
//   type      u8    the caller's record type (never 0)
//   crc       u32   CRC-32C of length, lsn, batch_lsn, type and the payload
//   payload
//
// A header of zeros is the end of a segment's data: segments are zero-filled before use,
// so appending never changes a file's size or block map and fdatasync flushes data only.
// batch_lsn tells a torn tail from corruption at recovery: a bad record followed by a
// valid record of the SAME group commit is a write that never finished its fsync (nothing
// in it was acknowledged) and is cut off; followed by a record of a LATER group commit,
// the bad one had been fsync'd (acknowledged), so the log is corrupt.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ps::wal {

inline constexpr uint32_t kMagic = 0x474C5350;
inline constexpr size_t kHeaderBytes = 4 + 4 + 8 + 8 + 1 + 4;
inline constexpr uint32_t kMaxPayloadBytes = 16u << 20;

struct RecordHeader {
  uint32_t length = 0;
  uint64_t lsn = 0;
  uint64_t batch_lsn = 0;
  uint8_t type = 0;
};

// CRC-32C (Castagnoli) of `data` (the CPU's instruction where there is one), and the
// table-driven computation the tests compare it with.
uint32_t crc32c(const void* data, size_t n);
uint32_t crc32c_portable(const void* data, size_t n);

// Appends one framed record to `out`.
void encode_record(std::string& out, const RecordHeader& h, std::string_view payload);

enum class FrameStatus {
  ok,        // a valid record
  end,       // a zero header, or fewer than kHeaderBytes left: no more data here
  bad,       // not a valid record (torn or corrupt): see the header comment
};
struct Frame {
  FrameStatus status = FrameStatus::end;
  RecordHeader header;
  std::string_view payload;   // points into the decoded buffer
  size_t frame_bytes = 0;     // header + payload, when ok
};
// Decodes the record that starts at buf[0].
Frame decode_record(std::string_view buf);

}  // namespace ps::wal
