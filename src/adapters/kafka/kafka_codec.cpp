// CloudEvents 1.0 binary content mode over Kafka, and the tx.dlq message layout.
#include <charconv>
#include <cstdint>
#include <ctime>

#include "adapters/kafka/kafka_internal.hpp"
#include "domain/ids.hpp"

namespace ps::kafka {
namespace {

constexpr std::string_view kSpecVersion = "1.0";
constexpr std::string_view kJson = "application/json";
constexpr std::string_view kDlqSource = "/paystream/dlq";

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm), so no
// time-zone state (timegm/TZ) is involved.
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = unsigned(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + int64_t(doe) - 719468;
}

bool digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

std::optional<int64_t> to_i64(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

const std::string* header(const Headers& h, std::string_view name) {
  const std::string* found = nullptr;
  for (const auto& [k, v] : h)
    if (k == name) found = &v;  // the last one wins
  return found;
}

std::string header_or_empty(const Headers& h, std::string_view name) {
  const std::string* v = header(h, name);
  return v ? *v : std::string();
}

Headers ce_headers(const Event& e) {
  Headers h{{std::string(kCeId), e.id},
            {std::string(kCeType), e.type},
            {std::string(kCeSource), e.source},
            {std::string(kCeTime), format_rfc3339_ms(e.time_ms)},
            {std::string(kCeSpecVersion), std::string(kSpecVersion)},
            {std::string(kContentType), std::string(kJson)}};
  if (!e.traceparent.empty()) h.emplace_back(std::string(kTraceparent), e.traceparent);
  return h;
}

}  // namespace

std::string format_rfc3339_ms(int64_t ms) {
  int64_t secs = ms / 1000, milli = ms % 1000;
  if (milli < 0) {
    milli += 1000;
    secs -= 1;
  }
  const time_t t = time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, int(milli));
  return buf;
}

std::optional<int64_t> parse_rfc3339_ms(std::string_view s) {
  int y, mo, d, h, mi, sec;
  if (!digits(s, 0, 4, &y) || s.size() < 20 || s[4] != '-' || !digits(s, 5, 2, &mo) || s[7] != '-' ||
      !digits(s, 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s, 11, 2, &h) || s[13] != ':' ||
      !digits(s, 14, 2, &mi) || s[16] != ':' || !digits(s, 17, 2, &sec))
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return std::nullopt;
  size_t pos = 19;
  int64_t milli = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t n = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (n < 3) milli = milli * 10 + (s[pos] - '0');
      ++n;
      ++pos;
    }
    if (n == 0) return std::nullopt;
    for (; n < 3; ++n) milli *= 10;
  }
  int64_t offset_min = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om;
    if (!digits(s, pos + 1, 2, &oh) || pos + 3 >= s.size() || s[pos + 3] != ':' || !digits(s, pos + 4, 2, &om) ||
        oh > 23 || om > 59)
      return std::nullopt;
    offset_min = (s[pos] == '+' ? 1 : -1) * (oh * 60 + om);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  const int64_t days = days_from_civil(y, unsigned(mo), unsigned(d));
  const int64_t secs = days * 86400 + h * 3600 + mi * 60 + std::min(sec, 59) - offset_min * 60;
  return secs * 1000 + milli;
}

std::string prefixed(const KafkaOptions& o, std::string_view topic) { return o.topic_prefix + std::string(topic); }

std::string unprefixed(const std::string& prefix, const std::string& topic) {
  if (!prefix.empty() && topic.size() >= prefix.size() && topic.compare(0, prefix.size(), prefix) == 0)
    return topic.substr(prefix.size());
  return topic;
}

OutMessage event_message_to(const KafkaOptions& o, std::string_view topic, const Event& e) {
  return OutMessage{prefixed(o, topic), e.key, e.data, ce_headers(e)};
}

OutMessage event_message(const KafkaOptions& o, const Event& e) { return event_message_to(o, topic_for(e.type), e); }

std::string dead_letter_event_id(const DeadLetter& d) {
  // Same letter (same record, same error) => same id, so a redelivered commit that
  // dead-letters the record again can be recognised; the error text keeps letters about
  // one event apart (e.g. webhook letters for two endpoints, whose offset is 0).
  const Record& r = d.original;
  return deterministic_id("dlq_",
                          r.topic + "#" + std::to_string(r.partition) + "#" + std::to_string(r.offset) + "#" + r.event.id,
                          d.error);
}

OutMessage dead_letter_message(const KafkaOptions& o, const DeadLetter& d, int64_t now_ms) {
  Event dl;
  dl.id = dead_letter_event_id(d);
  dl.type = std::string(event_types::dead_letter);
  dl.source = std::string(kDlqSource);
  dl.time_ms = now_ms;
  dl.key = d.original.event.key;
  dl.traceparent = d.original.event.traceparent;
  OutMessage m{prefixed(o, topics::dlq), d.original.event.key, event_envelope_json(d.original.event), ce_headers(dl)};
  m.headers.emplace_back(std::string(kOrigTopic), d.original.topic);
  m.headers.emplace_back(std::string(kOrigPartition), std::to_string(d.original.partition));
  m.headers.emplace_back(std::string(kOrigOffset), std::to_string(d.original.offset));
  m.headers.emplace_back(std::string(kError), d.error);
  m.headers.emplace_back(std::string(kAttempts), std::to_string(d.attempts));
  return m;
}

Event event_from_message(const InMessage& m) {
  Event e;
  e.id = header_or_empty(m.headers, kCeId);
  e.type = header_or_empty(m.headers, kCeType);
  e.source = header_or_empty(m.headers, kCeSource);
  if (const std::string* t = header(m.headers, kCeTime))
    if (auto ms = parse_rfc3339_ms(*t)) e.time_ms = *ms;
  e.traceparent = header_or_empty(m.headers, kTraceparent);
  e.key = m.key;
  e.data = m.value;
  // A message that says it is some other CloudEvents version is not ours to interpret.
  if (const std::string* v = header(m.headers, kCeSpecVersion); v && *v != kSpecVersion) e.type.clear();
  return e;
}

Record record_from_message(const InMessage& m, const std::string& prefix) {
  Record r;
  r.topic = unprefixed(prefix, m.topic);
  r.partition = m.partition;
  r.offset = m.offset;
  r.event = event_from_message(m);
  return r;
}

std::string dedup_id(const InMessage& m) {
  std::string id = header_or_empty(m.headers, kCeId);
  if (id.empty()) return id;
  if (const std::string* replay = header(m.headers, kReplayOf); replay && !replay->empty())
    id += "@replay:" + *replay;
  return id;
}

std::optional<KafkaDlqEntry> dlq_entry_from_message(const InMessage& m) {
  Event dl = event_from_message(m);
  if (dl.type != event_types::dead_letter) return std::nullopt;
  // A position that cannot be written as partition * stride + offset (a negative partition
  // or offset, an offset of a stride or more, a partition whose product overflows) would
  // name another letter or none: such a message is not an addressable letter.
  if (m.partition < 0 || m.offset < 0 || m.offset >= kDlqPartitionStride ||
      m.partition > (INT64_MAX - m.offset) / kDlqPartitionStride)
    return std::nullopt;
  KafkaDlqEntry out;
  out.position = int64_t(m.partition) * kDlqPartitionStride + m.offset;
  out.created_ms = m.timestamp_ms >= 0 ? m.timestamp_ms : dl.time_ms;
  DeadLetter& d = out.letter;
  d.original.topic = header_or_empty(m.headers, kOrigTopic);
  d.original.partition = int32_t(to_i64(header_or_empty(m.headers, kOrigPartition)).value_or(0));
  d.original.offset = to_i64(header_or_empty(m.headers, kOrigOffset)).value_or(0);
  d.original.event = parse_event_envelope(m.value);
  d.error = header_or_empty(m.headers, kError);
  d.attempts = int(to_i64(header_or_empty(m.headers, kAttempts)).value_or(0));
  return out;
}

}  // namespace ps::kafka
