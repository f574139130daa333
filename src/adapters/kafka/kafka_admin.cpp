// Operator and test tooling over Kafka: the dead-letter reader (tx.dlq), topic creation
// and produce_raw.
#include <algorithm>

#include "adapters/kafka/kafka_internal.hpp"
#include "common/log.hpp"

namespace ps {
namespace {
using SteadyClock = std::chrono::steady_clock;
constexpr size_t kMaxListLimit = 10000;
constexpr int64_t kFirstChunk = 64;  // offsets read back from the end at first

const std::vector<std::string_view>& pipeline_topics() {
  static const std::vector<std::string_view> t{topics::initiated, topics::validated, topics::settled, topics::failed,
                                               topics::dlq};
  return t;
}

int op_timeout(const KafkaOptions& o) { return std::max(1000, o.request_timeout_ms); }

}  // namespace

// ---------- KafkaDlqReader ----------

struct KafkaDlqReader::Impl : kafka::ClientHooks {
  KafkaOptions opts;
  std::string topic;  // full tx.dlq name
  std::mutex mu;      // one read at a time (the consumer's assignment is shared)
  kafka::RkPtr consumer;
  std::mutex pub_mu;
  std::unique_ptr<KafkaPublisher::Impl> publisher;  // republish(), created on first use

  // The messages of `partition` with offsets in [from, to), stopping early at the end of
  // the readable log (read_committed: the last stable offset). Aborted and control
  // records are never returned, so there may be fewer than to - from.
  Result<std::vector<kafka::InMessage>> read_range(int32_t partition, int64_t from, int64_t to) {
    std::vector<kafka::InMessage> out;
    rd_kafka_t* c = consumer.get();
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic.c_str(), partition)->offset = from;
    rd_kafka_resp_err_t err = rd_kafka_assign(c, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (err) return kafka::kafka_error(err, "assign " + topic);
    const auto deadline = SteadyClock::now() + std::chrono::milliseconds(op_timeout(opts));
    std::optional<Error> failed;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
      if (left <= 0) {
        failed = Error::timeout("reading " + topic + " did not reach offset " + std::to_string(to));
        break;
      }
      rd_kafka_message_t* m = rd_kafka_consumer_poll(c, int(left));
      if (!m) continue;
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        rd_kafka_message_destroy(m);
        break;
      }
      if (m->err) {
        log::debug("kafka dlq read error", {{"error", rd_kafka_message_errstr(m)}});
        rd_kafka_message_destroy(m);
        continue;
      }
      const int64_t off = m->offset;
      if (off < to) out.push_back(kafka::in_message(m));
      rd_kafka_message_destroy(m);
      if (off >= to - 1) break;
    }
    rd_kafka_assign(c, nullptr);
    if (failed) return *failed;
    return out;
  }

  // Retried within the operation timeout: right after topic creation the partition
  // leaders may still be settling (NOT_LEADER_FOR_PARTITION).
  Result<std::pair<int64_t, int64_t>> watermarks(int32_t partition) {
    const auto deadline = SteadyClock::now() + std::chrono::milliseconds(op_timeout(opts));
    for (;;) {
      int64_t lo = 0, hi = 0;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
      auto err = rd_kafka_query_watermark_offsets(consumer.get(), topic.c_str(), partition, &lo, &hi,
                                                  int(std::max<int64_t>(100, left)));
      if (!err) return std::make_pair(lo, hi);
      if (SteadyClock::now() >= deadline) return kafka::kafka_error(err, "watermarks of " + topic);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
};

KafkaDlqReader::KafkaDlqReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KafkaDlqReader::~KafkaDlqReader() = default;

Result<std::unique_ptr<KafkaDlqReader>> KafkaDlqReader::open(const KafkaOptions& opts) {
  auto impl = std::make_unique<Impl>();
  impl->opts = opts;
  impl->topic = kafka::prefixed(opts, topics::dlq);
  impl->what = "dlq reader";
  // Partitions are assigned explicitly and nothing is committed; librdkafka still wants a
  // group id for assign(), but this group never joins or commits.
  kafka::Props required{{"group.id", opts.topic_prefix + "paystream-dlq-reader"},
                        {"isolation.level", "read_committed"},
                        {"enable.auto.commit", "false"},
                        {"enable.auto.offset.store", "false"},
                        {"enable.partition.eof", "true"},
                        {"auto.offset.reset", "earliest"}};
  // Short fetch long-polls: a read ends at the partition end, signalled after an empty fetch.
  auto c = kafka::make_client(RD_KAFKA_CONSUMER, opts, {{"fetch.wait.max.ms", "100"}}, required, impl.get());
  if (!c) return c.error();
  impl->consumer = std::move(c.value());
  rd_kafka_poll_set_consumer(impl->consumer.get());
  return std::unique_ptr<KafkaDlqReader>(new KafkaDlqReader(std::move(impl)));
}

Result<std::vector<KafkaDlqEntry>> KafkaDlqReader::list(size_t limit) {
  std::vector<KafkaDlqEntry> all;
  limit = std::min(limit, kMaxListLimit);
  if (limit == 0) return all;
  Impl& m = *impl_;
  std::lock_guard l(m.mu);
  auto parts = kafka::partition_count(m.consumer.get(), m.topic, op_timeout(m.opts));
  if (!parts) return parts.error();
  for (int32_t p = 0; p < parts.value(); ++p) {
    auto wm = m.watermarks(p);
    if (!wm) return wm.error();
    const auto [lo, hi] = wm.value();
    // Read backwards from the end in growing chunks until this partition has `limit`
    // letters or its start is reached (markers and aborted records take offsets too).
    std::vector<KafkaDlqEntry> mine;
    int64_t end = hi, chunk = std::max<int64_t>(kFirstChunk, int64_t(limit));
    while (end > lo && mine.size() < limit) {
      const int64_t start = std::max(lo, end - chunk);
      auto msgs = m.read_range(p, start, end);
      if (!msgs) return msgs.error();
      std::vector<KafkaDlqEntry> got;
      for (const auto& msg : msgs.value())
        if (auto e = kafka::dlq_entry_from_message(msg)) got.push_back(std::move(*e));
      mine.insert(mine.begin(), std::make_move_iterator(got.begin()), std::make_move_iterator(got.end()));
      end = start;
      chunk *= 2;
    }
    all.insert(all.end(), std::make_move_iterator(mine.begin()), std::make_move_iterator(mine.end()));
  }
  std::sort(all.begin(), all.end(), [](const KafkaDlqEntry& a, const KafkaDlqEntry& b) {
    return a.created_ms != b.created_ms ? a.created_ms > b.created_ms : a.position > b.position;
  });
  if (all.size() > limit) all.resize(limit);
  return all;
}

Result<std::optional<KafkaDlqEntry>> KafkaDlqReader::get(int64_t position) {
  std::optional<KafkaDlqEntry> none;
  if (position < 0) return none;
  const auto partition = int32_t(position / kDlqPartitionStride);
  const int64_t offset = position % kDlqPartitionStride;
  Impl& m = *impl_;
  std::lock_guard l(m.mu);
  auto parts = kafka::partition_count(m.consumer.get(), m.topic, op_timeout(m.opts));
  if (!parts) return parts.error();
  if (partition >= parts.value()) return none;
  auto wm = m.watermarks(partition);
  if (!wm) return wm.error();
  if (offset < wm.value().first || offset >= wm.value().second) return none;
  auto msgs = m.read_range(partition, offset, offset + 1);
  if (!msgs) return msgs.error();
  for (const auto& msg : msgs.value())
    if (msg.offset == offset) return kafka::dlq_entry_from_message(msg);
  return none;
}

Result<void> KafkaDlqReader::republish(const DeadLetter& letter) {
  const Record& orig = letter.original;
  if (orig.topic.empty() || orig.topic == topics::dlq || orig.event.id.empty())
    return Error::unprocessable("dead_letter_not_replayable", "the dead letter has no original topic or event");
  Impl& m = *impl_;
  KafkaPublisher::Impl* pub;
  {
    std::lock_guard l(m.pub_mu);
    if (!m.publisher) {
      auto p = KafkaPublisher::Impl::open(m.opts, "dlq republisher");
      if (!p) return p.error();
      m.publisher = std::move(p.value());
    }
    pub = m.publisher.get();
  }
  kafka::OutMessage msg = kafka::event_message_to(m.opts, orig.topic, orig.event);
  // Same ce_id as the original: the marker keeps event dedup from dropping the replay.
  msg.headers.emplace_back(kafka::kReplayOf,
                           orig.topic + "/" + std::to_string(orig.partition) + "/" + std::to_string(orig.offset));
  auto r = pub->send_sync({std::move(msg)});
  if (r)
    log::info("dead letter republished",
              {{"topic", orig.topic}, {"event_id", orig.event.id}, {"payment_id", orig.event.key}});
  return r;
}

// ---------- create_topics ----------

Result<int> min_insync_for(const TopicSettings& settings, int replication_factor) {
  if (settings.min_insync_replicas < 0)
    return Error::invalid("kafka_config_invalid", "min.insync.replicas must be at least 1", "min_insync_replicas");
  const int want = settings.min_insync_replicas != 0 ? settings.min_insync_replicas : replication_factor >= 3 ? 2 : 1;
  if (want > replication_factor || (want == replication_factor && replication_factor > 1))
    return Error::invalid("kafka_config_invalid",
                          "min.insync.replicas " + std::to_string(want) + " must be below the replication factor " +
                              std::to_string(replication_factor) + " (or one broker down stops every producer)",
                          "min_insync_replicas");
  return want;
}

namespace {

// The configs create_topics gives `topic` (a pipeline topic name without prefix).
std::vector<std::pair<std::string, std::string>> wanted_configs(std::string_view topic, int min_insync,
                                                                const TopicSettings& settings) {
  std::vector<std::pair<std::string, std::string>> c{{"min.insync.replicas", std::to_string(min_insync)}};
  if (topic == topics::dlq) c.emplace_back("retention.ms", std::to_string(settings.dlq_retention_ms));
  return c;
}

// A client for admin requests, with its hooks (which must outlive it: declared first).
struct AdminClient {
  kafka::ClientHooks hooks;
  kafka::RkPtr rk;
};
Result<std::unique_ptr<AdminClient>> admin_client(const KafkaOptions& opts) {
  auto a = std::make_unique<AdminClient>();
  a->hooks.what = "admin";
  auto c = kafka::make_client(RD_KAFKA_PRODUCER, opts, {}, {}, &a->hooks);
  if (!c) return c.error();
  a->rk = std::move(c.value());
  return a;
}

}  // namespace

Result<std::map<std::string, std::string>> topic_configs(const KafkaOptions& opts, const std::string& topic) {
  auto admin = admin_client(opts);
  if (!admin) return admin.error();
  rd_kafka_t* rk = (*admin)->rk.get();
  const int timeout = op_timeout(opts);
  char errstr[512];
  const std::string name = kafka::prefixed(opts, topic);
  rd_kafka_ConfigResource_t* res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name.c_str());
  rd_kafka_AdminOptions_t* aopts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
  rd_kafka_AdminOptions_set_request_timeout(aopts, timeout, errstr, sizeof errstr);
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_DescribeConfigs(rk, &res, 1, aopts, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, timeout + 2000);
  Result<std::map<std::string, std::string>> out = std::map<std::string, std::string>{};
  if (!ev) {
    out = Error::timeout("describing topic " + name + " took longer than " + std::to_string(timeout + 2000) + " ms");
  } else if (rd_kafka_event_error(ev)) {
    out = kafka::kafka_error(rd_kafka_event_error(ev), "describe topic " + name + ": " + rd_kafka_event_error_string(ev));
  } else {
    size_t n = 0;
    const rd_kafka_ConfigResource_t** rs =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &n);
    for (size_t i = 0; i < n && out; ++i) {
      if (rd_kafka_ConfigResource_error(rs[i]) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* m = rd_kafka_ConfigResource_error_string(rs[i]);
        out = kafka::kafka_error(rd_kafka_ConfigResource_error(rs[i]),
                                 "describe topic " + name + (m ? std::string(": ") + m : ""));
        break;
      }
      size_t k = 0;
      const rd_kafka_ConfigEntry_t** entries = rd_kafka_ConfigResource_configs(rs[i], &k);
      for (size_t j = 0; j < k; ++j) {
        const char* v = rd_kafka_ConfigEntry_value(entries[j]);
        (*out)[rd_kafka_ConfigEntry_name(entries[j])] = v ? v : "";
      }
    }
  }
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_AdminOptions_destroy(aopts);
  rd_kafka_ConfigResource_destroy(res);
  return out;
}

Result<std::vector<std::string>> create_topics(const KafkaOptions& opts, int partitions, int replication_factor,
                                               const TopicSettings& settings) {
  if (partitions < 1) return Error::invalid("kafka_config_invalid", "partitions must be at least 1", "partitions");
  if (replication_factor < 1)
    return Error::invalid("kafka_config_invalid", "replication factor must be at least 1", "replication_factor");
  if (settings.dlq_retention_ms < -1 || settings.dlq_retention_ms == 0)
    return Error::invalid("kafka_config_invalid", "the tx.dlq retention must be -1 (for ever) or positive milliseconds",
                          "dlq_retention_ms");
  auto min_insync = min_insync_for(settings, replication_factor);
  if (!min_insync) return min_insync.error();
  auto admin = admin_client(opts);
  if (!admin) return admin.error();
  rd_kafka_t* rk = (*admin)->rk.get();
  const int timeout = op_timeout(opts);
  char errstr[512];

  std::vector<std::string> names;
  std::vector<rd_kafka_NewTopic_t*> news;
  for (auto t : pipeline_topics()) {
    names.push_back(kafka::prefixed(opts, t));
    rd_kafka_NewTopic_t* nt =
        rd_kafka_NewTopic_new(names.back().c_str(), partitions, replication_factor, errstr, sizeof errstr);
    if (!nt) {
      for (auto* n : news) rd_kafka_NewTopic_destroy(n);
      return Error::invalid("kafka_config_invalid", std::string("topic ") + names.back() + ": " + errstr);
    }
    news.push_back(nt);
    for (const auto& [k, v] : wanted_configs(t, *min_insync, settings))
      if (rd_kafka_NewTopic_set_config(nt, k.c_str(), v.c_str()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (auto* n : news) rd_kafka_NewTopic_destroy(n);
        return Error::invalid("kafka_config_invalid", "topic " + names.back() + ": cannot set " + k);
      }
  }
  rd_kafka_AdminOptions_t* aopts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_request_timeout(aopts, timeout, errstr, sizeof errstr);
  rd_kafka_AdminOptions_set_operation_timeout(aopts, timeout, errstr, sizeof errstr);
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, news.data(), news.size(), aopts, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, timeout + 2000);

  Result<std::vector<std::string>> out = std::vector<std::string>{};
  if (!ev) {
    out = Error::timeout("creating Kafka topics took longer than " + std::to_string(timeout + 2000) + " ms");
  } else if (rd_kafka_event_error(ev)) {
    out = kafka::kafka_error(rd_kafka_event_error(ev), std::string("create topics: ") + rd_kafka_event_error_string(ev));
  } else {
    const rd_kafka_CreateTopics_result_t* res = rd_kafka_event_CreateTopics_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t** results = rd_kafka_CreateTopics_result_topics(res, &n);
    std::vector<std::string> created;
    for (size_t i = 0; i < n && out; ++i) {
      const rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);
      const char* name = rd_kafka_topic_result_name(results[i]);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) created.emplace_back(name);
      else if (err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        const char* msg = rd_kafka_topic_result_error_string(results[i]);
        out = kafka::kafka_error(err, std::string("create topic ") + name + (msg ? std::string(": ") + msg : ""));
      }
    }
    if (out) out = std::move(created);
  }
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_AdminOptions_destroy(aopts);
  for (auto* n : news) rd_kafka_NewTopic_destroy(n);
  if (!out) return out;

  // Wait until every topic has its partitions in the metadata, so producers and consumers
  // started right after this do not race topic propagation.
  const auto deadline = SteadyClock::now() + std::chrono::milliseconds(timeout);
  for (const auto& name : names) {
    for (;;) {
      auto pc = kafka::partition_count(rk, name, timeout);
      if (pc && pc.value() > 0) break;
      if (SteadyClock::now() >= deadline)
        return Error::timeout("topic " + name + " did not appear in the metadata in time");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  for (const auto& name : out.value()) log::info("kafka topic created", {{"topic", name}});
  // Topics that were there already keep their configs: say where they differ.
  for (auto t : pipeline_topics()) {
    const std::string name = kafka::prefixed(opts, t);
    if (std::find(out->begin(), out->end(), name) != out->end()) continue;
    auto have = topic_configs(opts, std::string(t));
    if (!have) {
      log::warn("cannot read the configs of an existing topic", {{"topic", name}, {"error", have.error().message}});
      continue;
    }
    for (const auto& [k, v] : wanted_configs(t, *min_insync, settings))
      if (auto it = have->find(k); it == have->end() || it->second != v)
        log::warn("existing topic keeps a config that differs from the wanted one; change it with kafka-configs.sh "
                  "--alter if intended",
                  {{"topic", name}, {"config", k}, {"has", it == have->end() ? "" : it->second}, {"wanted", v}});
  }
  return out;
}

// ---------- produce_raw ----------

Result<void> produce_raw(const KafkaOptions& opts, const std::string& topic, const std::string& key,
                         const std::string& value, const std::vector<std::pair<std::string, std::string>>& headers) {
  auto pub = KafkaPublisher::Impl::open(opts, "raw producer");
  if (!pub) return pub.error();
  return pub.value()->send_sync({kafka::OutMessage{kafka::prefixed(opts, topic), key, value, headers}});
}

}  // namespace ps
