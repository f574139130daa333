// The payloads of the engine log's records (log_engine.hpp): a compact binary encoding,
// written once per write on the acknowledgement path and read only by recovery.
// Little-endian; strings are a u32 length and the bytes; every payload starts with a
// format version byte (1). The record type is ProjectedWrite::Kind. Decoding checks every
// length against the payload, so a record that passed the log's CRC but is not ours fails
// with internal "log_record_undecodable" instead of reading past its end.
// Written by hand: the payload is a fixed set of plain fields, and a generic codec (JSON,
// as the store codecs use) costs more CPU and about twice the bytes on the hot path.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "adapters/sqlite/sqlite_projection.hpp"
#include "common/result.hpp"

namespace ps::engine_record {

inline constexpr uint8_t kPaymentAccepted = uint8_t(ProjectedWrite::Kind::payment);
inline constexpr uint8_t kResponseReplaced = uint8_t(ProjectedWrite::Kind::response);

// The record type of `w` and its payload (w.lsn is not encoded: the log numbers records).
inline uint8_t record_type(const ProjectedWrite& w) { return uint8_t(w.kind); }
std::string encode(const ProjectedWrite& w);
// The payload of a payment record, from the command itself (no copy of it).
std::string encode_payment(int64_t now_ms, const AcceptPayment& c);
Result<ProjectedWrite> decode(uint8_t type, std::string_view payload);

}  // namespace ps::engine_record
