// The payloads of the intake log's records (logged_intake.hpp): a compact binary encoding,
// written once per payment on the acknowledgement path and read only by recovery.
// Little-endian; strings are a u32 length and the bytes; every payload starts with a
// format version byte (1). Decoding checks every length against the payload, so a record
// that passed the log's CRC but is not ours fails with internal "log_record_undecodable"
// instead of reading past its end.
// Written by hand: the payload is a fixed set of plain fields, and a generic codec (JSON,
// as the store codecs use) costs more CPU and ~2x the bytes on the hot path.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "adapters/sqlite/sqlite_projection.hpp"
#include "common/result.hpp"

namespace ps::intake_log {

inline constexpr uint8_t kPaymentAccepted = 1;   // ProjectedWrite with a payment
inline constexpr uint8_t kResponseReplaced = 2;  // ProjectedWrite without one

// The record type of `w` and its payload (w.lsn is not encoded: the log numbers records).
uint8_t record_type(const ProjectedWrite& w);
std::string encode(const ProjectedWrite& w);
// The payload of a kPaymentAccepted record, from the command itself (no copy of it).
std::string encode_payment(int64_t now_ms, const AcceptPayment& c);
Result<ProjectedWrite> decode(uint8_t type, std::string_view payload);

}  // namespace ps::intake_log
