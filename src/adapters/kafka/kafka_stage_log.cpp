// KafkaStageLog: StageLog over Kafka consumer groups (see kafka.hpp for the two kinds of
// group). One consumer per group, created on the group's first poll; all librdkafka
// callbacks of a consumer (rebalance, statistics, commit results) are served inside
// rd_kafka_consumer_poll()/close, i.e. on the thread that holds the group's mutex, so
// group state needs no further locking.
//
// Bookkeeping per assigned partition (unprefixed topic, partition):
//   committed     next offset known to be committed (by this instance, or the stored
//                 position at assignment for database groups); -1 if unknown
//   pending_from  first offset handed out by poll() and not yet covered by a commit
//   polled_to     last offset handed out by poll()
// poll() rewinds partitions with pending records to max(pending_from, committed) first, so
// records handed out but never committed come back (the contract: "poll returns records
// after the committed position"); commit() failures rewind the same way at once.
//
// Topics: a group's consumer stays subscribed to every topic it was ever polled for (so a
// poll for fewer topics causes no rebalance and earlier records stay committable), but a
// poll returns records of the requested topics only. A record of another topic that the
// consumer delivers meanwhile is noted like a record handed out (pending_from/polled_to)
// and dropped, so the next poll rewinds its partition and it is delivered again when that
// topic is asked for. Stage runners always poll the same topics; only a group polled with
// changing topic sets pays for the re-fetch.
//
// Duplicates (opts.dedup): a poll asks EventDedup::first_copies for the records it is about
// to return; copies that are not first are withheld. They stay noted as handed out
// (pending_from/polled_to), so a failed or partial commit rewinds them like any record, and
// each is remembered in PartState::withheld with `prev`: the offset after the last record of
// its partition handed out before it in the same poll (-1: none). A commit moves a
// partition past a withheld copy when nothing handed out lies before it uncovered: prev is
// -1 (a poll's records of a partition start at its committed position, since every poll
// first rewinds what was not committed), or the commit reaches prev. The stage's usual
// commit of its whole batch therefore covers every copy withheld from that batch, also in
// partitions where every record was a copy (they are added to the commit). A poll whose
// records were ALL withheld returns nothing, so the stage commits nothing: such a poll
// commits the copies itself (an offsets-only transaction, or PositionSink::apply without
// effects) before returning — otherwise every later poll would fetch and withhold them again.
//
// Uncertain transaction outcome: when commit_transaction fails and the transaction is not
// cleanly aborted afterwards (the abort fails, or the producer is fatally broken), the
// coordinator may still complete the commit (EndTxn may have reached it). Rewinding to the
// local pending position would then process and commit the batch a second time, possibly
// with another decision. Instead the group is marked `uncertain`: the transactional
// producer is re-created (init_transactions with the same transactional.id returns only
// once the coordinator has completed or aborted the open transaction), the group's
// committed offsets are read from the broker (rd_kafka_committed), and each partition is
// sought to max(broker committed, first uncommitted offset handed out). Until that
// succeeds, poll() hands nothing out and commit() refuses.
//
// Consumer lag (paystream_kafka_consumer_lag{group,topic,partition}) comes from the
// statistics callback: lag = ls_offset (last stable offset; read_committed) minus the
// group's committed position = max(our own `committed`, the statistics' committed_offset).
// A partition the group never committed starts at the log start (auto.offset.reset=
// earliest), so its lag is measured from lo_offset. Unknown values (-1/-1001) are skipped.
// On a topic written by transactions the last offset is a commit marker, not a record, so
// end - pos stays >= 1 for a caught-up group; the lag is reported as 0 when the statistics
// show nothing consumable between pos and end (see handle_stats).
#include <boost/json.hpp>

#include <algorithm>
#include <cstring>
#include <set>

#include "adapters/kafka/kafka_internal.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"

namespace ps {
namespace {
using SteadyClock = std::chrono::steady_clock;
constexpr size_t kMaxPollRecords = 10000;
constexpr auto kErrorLogInterval = std::chrono::seconds(5);

struct PartState {
  int64_t committed = -1;
  int64_t pending_from = -1;
  int64_t polled_to = -1;
  // Copies withheld by event dedup and not committed yet: (offset, prev), ascending offsets;
  // prev = offset after the last record of this partition handed out before it in the same
  // poll, -1 if none (see the file comment).
  std::vector<std::pair<int64_t, int64_t>> withheld;
};

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int remaining_ms(SteadyClock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
  return int(std::clamp<int64_t>(left, 0, 60'000));
}

metrics::Gauge& lag_gauge(const std::string& group, const TopicPartition& tp) {
  return metrics::registry().gauge(
      "paystream_kafka_consumer_lag",
      "Records a consumer group has not committed yet: last stable offset minus committed position",
      {{"group", group}, {"topic", tp.first}, {"partition", std::to_string(tp.second)}});
}

void count_duplicates(const std::string& group, double n) {
  metrics::registry()
      .counter("paystream_kafka_duplicates_dropped_total",
               "Copies of an already seen event withheld from a stage by event dedup", {{"group", group}})
      .inc(n);
}

void count_transaction(const std::string& group, const char* outcome) {
  metrics::registry()
      .counter("paystream_kafka_transactions_total", "Kafka transactions of stage commits, by outcome",
               {{"group", group}, {"outcome", outcome}})
      .inc();
}

// RAII for librdkafka objects used within one function.
struct ListPtr {
  rd_kafka_topic_partition_list_t* p;
  explicit ListPtr(int n) : p(rd_kafka_topic_partition_list_new(n)) {}
  ~ListPtr() { rd_kafka_topic_partition_list_destroy(p); }
  ListPtr(const ListPtr&) = delete;
  ListPtr& operator=(const ListPtr&) = delete;
};
struct ErrPtr {
  rd_kafka_error_t* e;
  explicit ErrPtr(rd_kafka_error_t* x = nullptr) : e(x) {}
  ~ErrPtr() { if (e) rd_kafka_error_destroy(e); }
  ErrPtr(const ErrPtr&) = delete;
  ErrPtr& operator=(const ErrPtr&) = delete;
  void reset(rd_kafka_error_t* x) { if (e) rd_kafka_error_destroy(e); e = x; }
  explicit operator bool() const { return e != nullptr; }
};

int64_t json_i64(const boost::json::object& o, const char* k) {
  const auto* v = o.if_contains(k);
  if (!v) return -1;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return int64_t(v->get_uint64());
  return -1;
}

std::string describe(const rd_kafka_topic_partition_list_t* l) {
  std::string s;
  for (int i = 0; i < l->cnt; ++i) {
    if (!s.empty()) s += ",";
    s += std::string(l->elems[i].topic) + "[" + std::to_string(l->elems[i].partition) + "]";
  }
  return s;
}

}  // namespace

struct KafkaStageLog::Impl {
  struct Group final : kafka::ClientHooks {
    Impl* log = nullptr;
    std::string name;
    bool db = false;                 // positions live in the PositionSink
    std::mutex mu;                   // one poll/commit at a time
    kafka::RkPtr consumer;
    std::vector<std::string> subscribed;  // full topic names, sorted
    kafka::ClientHooks txn_hooks;    // the transactional producer's (its own fatal flag)
    kafka::RkPtr txn;                // Kafka-sink groups, created on first need
    std::map<TopicPartition, PartState> parts;  // assigned partitions
    bool closed = false;
    bool uncertain = false;          // a transaction's outcome is unknown (see the file comment)
    SteadyClock::time_point last_error_log{};
  };

  explicit Impl(KafkaStageLogOptions o) : opts(std::move(o)) {}

  KafkaStageLogOptions opts;
  std::mutex mu;  // groups, closed
  std::map<std::string, std::unique_ptr<Group>> groups;
  bool closed = false;
  std::mutex pub_mu;
  std::unique_ptr<KafkaPublisher::Impl> publisher;  // database groups' effects

  const KafkaOptions& ko() const { return opts.kafka; }

  Result<Group*> group(const std::string& name) {
    std::lock_guard l(mu);
    if (closed) return Error::unavailable("kafka_log_closed", "the Kafka stage log is closed");
    auto& g = groups[name];
    if (!g) {
      g = std::make_unique<Group>();
      g->log = this;
      g->name = name;
      g->db = opts.database_groups.count(name) > 0;
      g->what = "consumer " + name;
      g->txn_hooks.what = "transactional producer " + name;
    }
    return g.get();
  }

  Result<KafkaPublisher::Impl*> shared_publisher() {
    std::lock_guard l(pub_mu);
    if (!publisher) {
      auto p = KafkaPublisher::Impl::open(ko(), "stage log producer");
      if (!p) return p.error();
      publisher = std::move(p.value());
    }
    return publisher.get();
  }

  // ---------- consumer ----------

  static void on_rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts,
                           void* opaque) {
    auto* g = static_cast<Group*>(static_cast<kafka::ClientHooks*>(opaque));
    g->log->handle_rebalance(*g, rk, err, parts);
  }

  static int on_stats(rd_kafka_t*, char* json, size_t len, void* opaque) {
    auto* g = static_cast<Group*>(static_cast<kafka::ClientHooks*>(opaque));
    g->log->handle_stats(*g, std::string_view(json, len));
    return 0;  // librdkafka frees the JSON
  }

  static void on_offset_commit(rd_kafka_t*, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* offsets,
                               void* opaque) {
    // Database groups only: these commits exist for lag monitoring; a failure costs nothing.
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
      auto* g = static_cast<Group*>(static_cast<kafka::ClientHooks*>(opaque));
      log::debug("kafka offset commit (monitoring) failed",
                 {{"group", g->name}, {"code", rd_kafka_err2name(err)}, {"partitions", describe(offsets)}});
    }
  }

  void handle_rebalance(Group& g, rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* list) {
    const char* proto = rd_kafka_rebalance_protocol(rk);
    const bool coop = proto && std::strcmp(proto, "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      std::optional<std::map<TopicPartition, int64_t>> stored;
      if (g.db) {
        auto r = opts.sink->positions(g.name);
        if (r) stored = std::move(r.value());
        else
          // Fall back to the Kafka-committed offsets: they trail the stored positions (they
          // are committed after the database), so this only redelivers; the sink dedupes.
          log::warn("stored positions unavailable; starting from Kafka-committed offsets",
                    {{"group", g.name}, {"error", r.error().message}});
      }
      for (int i = 0; i < list->cnt; ++i) {
        auto& e = list->elems[i];
        TopicPartition tp{kafka::unprefixed(ko().topic_prefix, e.topic), e.partition};
        PartState ps;
        if (stored) {
          auto it = stored->find(tp);
          e.offset = it != stored->end() ? it->second : RD_KAFKA_OFFSET_BEGINNING;
          if (it != stored->end()) ps.committed = it->second;
        }
        g.parts[tp] = ps;
      }
      ErrPtr e(coop ? rd_kafka_incremental_assign(rk, list) : nullptr);
      rd_kafka_resp_err_t aerr = coop ? RD_KAFKA_RESP_ERR_NO_ERROR : rd_kafka_assign(rk, list);
      if (e || aerr)
        log::error("kafka partition assignment failed",
                   {{"group", g.name}, {"error", e ? rd_kafka_error_string(e.e) : rd_kafka_err2str(aerr)}});
      else
        log::info("kafka partitions assigned", {{"group", g.name}, {"partitions", describe(list)}});
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
      const bool lost = rd_kafka_assignment_lost(rk);
      for (int i = 0; i < list->cnt; ++i) {
        TopicPartition tp{kafka::unprefixed(ko().topic_prefix, list->elems[i].topic), list->elems[i].partition};
        g.parts.erase(tp);
        lag_gauge(g.name, tp).set(0);  // the new owner reports it
      }
      ErrPtr e(coop ? rd_kafka_incremental_unassign(rk, list) : nullptr);
      if (!coop) rd_kafka_assign(rk, nullptr);
      if (e) log::error("kafka partition revocation failed", {{"group", g.name}, {"error", rd_kafka_error_string(e.e)}});
      log::info(lost ? "kafka partitions lost" : "kafka partitions revoked",
                {{"group", g.name}, {"partitions", describe(list)}});
    } else {
      log::error("kafka rebalance error", {{"group", g.name}, {"code", rd_kafka_err2name(err)}});
      for (const auto& [tp, ps] : g.parts) lag_gauge(g.name, tp).set(0);
      g.parts.clear();
      rd_kafka_assign(rk, nullptr);
    }
  }

  void handle_stats(Group& g, std::string_view json) {
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(json, ec);
    if (ec || !v.is_object()) return;
    const auto* topics = v.get_object().if_contains("topics");
    if (!topics || !topics->is_object()) return;
    for (const auto& [tp, ps] : g.parts) {
      const auto* t = topics->get_object().if_contains(kafka::prefixed(ko(), tp.first));
      if (!t || !t->is_object()) continue;
      const auto* partitions = t->get_object().if_contains("partitions");
      if (!partitions || !partitions->is_object()) continue;
      const auto* p = partitions->get_object().if_contains(std::to_string(tp.second));
      if (!p || !p->is_object()) continue;
      const auto& o = p->get_object();
      const int64_t ls = json_i64(o, "ls_offset"), hi = json_i64(o, "hi_offset");
      const int64_t end = ls >= 0 ? ls : hi;
      if (end < 0) continue;
      int64_t pos = std::max(ps.committed, json_i64(o, "committed_offset"));
      if (pos < 0) pos = json_i64(o, "lo_offset");
      if (pos < 0) continue;
      // Caught up although pos < end: what lies between is no record (commit markers,
      // aborted data) if the fetcher has reached the end, everything fetched was handed
      // out (empty queue; app_offset moves past markers) and nothing handed out is
      // uncommitted.
      const int64_t app = json_i64(o, "app_offset");
      const bool caught_up = json_i64(o, "next_offset") >= end && json_i64(o, "fetchq_cnt") == 0 &&
                             (app < 0 || app >= end) && ps.pending_from < 0;
      lag_gauge(g.name, tp).set(caught_up ? 0.0 : double(std::max<int64_t>(0, end - pos)));
    }
  }

  Result<void> ensure_consumer(Group& g, const std::vector<std::string>& topics) {
    std::vector<std::string> want = g.subscribed;  // the union: see the file comment
    for (const auto& t : topics) want.push_back(kafka::prefixed(ko(), t));
    std::sort(want.begin(), want.end());
    want.erase(std::unique(want.begin(), want.end()), want.end());

    if (g.consumer && g.fatal) {
      log::warn("kafka consumer recreated after a fatal error", {{"group", g.name}});
      close_consumer(g);
    }
    if (!g.consumer) {
      const auto& o = ko();
      kafka::Props defaults{{"session.timeout.ms", std::to_string(o.session_timeout_ms)},
                            {"statistics.interval.ms", std::to_string(o.statistics_interval_ms)}};
      kafka::Props required{{"group.id", o.topic_prefix + g.name},
                            {"partition.assignment.strategy", "cooperative-sticky"},
                            {"isolation.level", "read_committed"},
                            {"enable.auto.commit", "false"},
                            {"enable.auto.offset.store", "false"},
                            {"auto.offset.reset", "earliest"},
                            {"enable.partition.eof", "false"}};
      auto c = kafka::make_client(RD_KAFKA_CONSUMER, o, defaults, required, &g, [](rd_kafka_conf_t* conf) {
        rd_kafka_conf_set_rebalance_cb(conf, &Impl::on_rebalance);
        rd_kafka_conf_set_stats_cb(conf, &Impl::on_stats);
        rd_kafka_conf_set_offset_commit_cb(conf, &Impl::on_offset_commit);
      });
      if (!c) return c.error();
      g.consumer = std::move(c.value());
      g.fatal = false;
      // Serve every callback (rebalance, statistics, errors) from rd_kafka_consumer_poll().
      rd_kafka_poll_set_consumer(g.consumer.get());
      g.subscribed.clear();
    }
    if (g.subscribed != want) {
      ListPtr list(int(want.size()));
      for (const auto& t : want) rd_kafka_topic_partition_list_add(list.p, t.c_str(), RD_KAFKA_PARTITION_UA);
      if (auto err = rd_kafka_subscribe(g.consumer.get(), list.p))
        return kafka::kafka_error(err, "subscribe " + g.name);
      g.subscribed = std::move(want);
    }
    return {};
  }

  // Bounded close: leaves the group (revoking through handle_rebalance) within the session
  // timeout, else drops the handle without waiting for the broker.
  void close_consumer(Group& g) {
    if (!g.consumer) return;
    rd_kafka_t* c = g.consumer.release();
    rd_kafka_queue_t* q = rd_kafka_queue_new(c);
    ErrPtr e(rd_kafka_consumer_close_queue(c, q));
    if (e) {
      log::warn("kafka consumer close failed", {{"group", g.name}, {"error", rd_kafka_error_string(e.e)}});
    } else {
      const auto deadline = SteadyClock::now() + std::chrono::milliseconds(std::max(5000, ko().session_timeout_ms));
      while (!rd_kafka_consumer_closed(c) && SteadyClock::now() < deadline) {
        rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 100);
        if (!ev) continue;
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
          handle_rebalance(g, c, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev));
        rd_kafka_event_destroy(ev);
      }
    }
    rd_kafka_queue_destroy(q);
    const bool done = rd_kafka_consumer_closed(c);
    if (!done) log::warn("kafka consumer did not close in time", {{"group", g.name}});
    rd_kafka_destroy_flags(c, done ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    for (const auto& [tp, ps] : g.parts) lag_gauge(g.name, tp).set(0);
    g.parts.clear();
    g.subscribed.clear();
  }

  // Seeks partitions with records handed out but not committed back to the first of them.
  Result<void> rewind(Group& g) {
    std::vector<std::pair<TopicPartition, int64_t>> targets;
    for (auto& [tp, ps] : g.parts)
      if (ps.pending_from >= 0) targets.emplace_back(tp, std::max(ps.pending_from, ps.committed));
    if (targets.empty()) return {};
    if (!g.consumer) {
      for (auto& [tp, ps] : g.parts) {
        ps.pending_from = ps.polled_to = -1;
        ps.withheld.clear();
      }
      return {};
    }
    ListPtr list(int(targets.size()));
    for (const auto& [tp, off] : targets)
      rd_kafka_topic_partition_list_add(list.p, kafka::prefixed(ko(), tp.first).c_str(), tp.second)->offset = off;
    ErrPtr e(rd_kafka_seek_partitions(g.consumer.get(), list.p, std::max(1000, ko().request_timeout_ms)));
    if (e) return kafka::kafka_error(e.e, "rewind " + g.name);
    std::optional<Error> failed;
    for (int i = 0; i < list.p->cnt; ++i) {
      const auto& el = list.p->elems[i];
      auto it = g.parts.find({kafka::unprefixed(ko().topic_prefix, el.topic), el.partition});
      if (el.err) {
        if (!failed) failed = kafka::kafka_error(el.err, "rewind " + g.name + " " + el.topic);
      } else if (it != g.parts.end()) {
        it->second.pending_from = it->second.polled_to = -1;
        it->second.withheld.clear();  // they come back and are asked about again
      }
    }
    if (failed) return *failed;
    log::debug("kafka consumer rewound", {{"group", g.name}, {"partitions", describe(list.p)}});
    return {};
  }

  // ---------- poll ----------

  Result<std::vector<Record>> poll(const std::string& name, const std::vector<std::string>& topics, size_t max,
                                   std::chrono::milliseconds wait) {
    std::vector<Record> out;
    if (topics.empty() || max == 0) return out;
    max = std::min(max, kMaxPollRecords);
    auto gr = group(name);
    if (!gr) return gr.error();
    Group& g = *gr.value();
    std::lock_guard l(g.mu);
    if (g.closed) return Error::unavailable("kafka_log_closed", "the Kafka stage log is closed");
    // Kafka-sink groups: the transactional producer first, so that a restarted instance
    // fences its predecessor and aborts its open transaction before consuming (an open
    // transaction would hold back the group's committed offsets and downstream readers).
    if (!g.db)
      if (auto r = ensure_transactional_producer(g); !r) return r.error();
    if (auto r = ensure_consumer(g, topics); !r) return r.error();
    if (auto r = g.uncertain ? resolve_uncertain(g) : rewind(g); !r) return r.error();

    const std::set<std::string> wanted(topics.begin(), topics.end());
    std::vector<std::string> dedup_ids;  // parallel to out (only with opts.dedup)
    const auto deadline = SteadyClock::now() + wait;
    while (out.size() < max) {
      // Wait (up to the deadline) for the first record, then take what is already there.
      rd_kafka_message_t* m = rd_kafka_consumer_poll(g.consumer.get(), out.empty() ? remaining_ms(deadline) : 0);
      if (!m) {
        if (!out.empty() || SteadyClock::now() >= deadline) break;
        continue;
      }
      if (m->err) {
        const rd_kafka_resp_err_t err = m->err;
        const std::string detail = rd_kafka_message_errstr(m);
        rd_kafka_message_destroy(m);
        if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) continue;
        if (err == RD_KAFKA_RESP_ERR__FATAL) {
          g.fatal = true;
          return kafka::kafka_error(err, "consumer " + name);
        }
        // Unknown topics (not created yet), transport errors: librdkafka keeps retrying.
        if (SteadyClock::now() - g.last_error_log >= kErrorLogInterval) {
          g.last_error_log = SteadyClock::now();
          log::warn("kafka consumer error", {{"group", name}, {"code", rd_kafka_err2name(err)}, {"error", detail}});
        }
        if (SteadyClock::now() >= deadline && out.empty()) break;
        continue;
      }
      const kafka::InMessage im = kafka::in_message(m);
      rd_kafka_message_destroy(m);
      Record r = kafka::record_from_message(im, ko().topic_prefix);
      // Noted as handed out at once: the statistics callback may run within this loop.
      // A record of a topic not asked for is noted too (so the next poll rewinds to it)
      // but not returned.
      if (auto it = g.parts.find({r.topic, r.partition}); it != g.parts.end()) {
        PartState& ps = it->second;
        ps.pending_from = ps.pending_from < 0 ? r.offset : std::min(ps.pending_from, r.offset);
        ps.polled_to = std::max(ps.polled_to, r.offset);
      }
      if (wanted.count(r.topic)) {
        if (opts.dedup) dedup_ids.push_back(kafka::dedup_id(im));
        out.push_back(std::move(r));
      }
    }

    // Keep only records of partitions still assigned (a rebalance may have run meanwhile)
    // and not behind what is committed.
    std::vector<Record> kept;
    std::vector<std::string> kept_ids;
    kept.reserve(out.size());
    for (size_t i = 0; i < out.size(); ++i) {
      Record& r = out[i];
      auto it = g.parts.find({r.topic, r.partition});
      if (it == g.parts.end() || r.offset < it->second.committed) continue;
      if (opts.dedup) kept_ids.push_back(std::move(dedup_ids[i]));
      kept.push_back(std::move(r));
    }
    if (!opts.dedup || kept.empty()) return kept;
    return drop_duplicates(g, std::move(kept), kept_ids);
  }

  // Withholds the records that are not the first copy of their event (see the file comment).
  Result<std::vector<Record>> drop_duplicates(Group& g, std::vector<Record> recs, const std::vector<std::string>& ids) {
    std::vector<Record> probe(recs.size());  // positions and dedup ids only
    for (size_t i = 0; i < recs.size(); ++i) {
      probe[i].topic = recs[i].topic;
      probe[i].partition = recs[i].partition;
      probe[i].offset = recs[i].offset;
      probe[i].event.id = ids[i];
    }
    auto first = opts.dedup->first_copies(ko().topic_prefix + g.name, probe);
    if (first && first->size() != recs.size())
      first = Error::internal("event dedup answered " + std::to_string(first->size()) + " times for " +
                              std::to_string(recs.size()) + " records");
    if (!first) {
      rewind_logged(g);  // nothing handed out: the records come back on the next poll
      return first.error();
    }
    std::vector<Record> handed;
    handed.reserve(recs.size());
    std::map<TopicPartition, int64_t> after_last_handed;
    size_t dropped = 0;
    for (size_t i = 0; i < recs.size(); ++i) {
      const TopicPartition tp{recs[i].topic, recs[i].partition};
      if ((*first)[i]) {
        after_last_handed[tp] = recs[i].offset + 1;
        handed.push_back(std::move(recs[i]));
        continue;
      }
      auto prev = after_last_handed.find(tp);
      g.parts[tp].withheld.emplace_back(recs[i].offset, prev == after_last_handed.end() ? -1 : prev->second);
      log::info("duplicate event copy withheld", {{"group", g.name}, {"event_id", recs[i].event.id},
                                                  {"topic", tp.first}, {"partition", std::to_string(tp.second)},
                                                  {"offset", std::to_string(recs[i].offset)}});
      ++dropped;
    }
    if (dropped == 0) return handed;
    count_duplicates(g.name, double(dropped));
    // Nothing for the stage, so it will not commit: move past the copies here.
    if (handed.empty())
      if (auto r = commit_locked(g, {}, Effects{}); !r) return r.error();
    return handed;
  }

  // ---------- commit ----------

  Result<void> commit(const std::string& name, const std::vector<Record>& consumed, Effects effects) {
    auto gr = group(name);
    if (!gr) return gr.error();
    Group& g = *gr.value();
    std::lock_guard l(g.mu);
    if (g.closed) return Error::unavailable("kafka_log_closed", "the Kafka stage log is closed");
    return commit_locked(g, consumed, std::move(effects));
  }

  Result<void> commit_locked(Group& g, const std::vector<Record>& consumed, Effects effects) {
    const std::string& name = g.name;
    if (g.uncertain) {
      // Whatever the caller holds was handed out before the uncertain commit, which may have
      // committed it: it must poll again once the outcome is known.
      if (auto r = resolve_uncertain(g); !r)
        log::warn("kafka transaction outcome still unknown", {{"group", name}, {"error", r.error().message}});
      return Error::unavailable("kafka_commit_uncertain",
                                "an earlier transaction of " + name + " had an unknown outcome; poll again");
    }

    std::map<TopicPartition, int64_t> next;  // next offset per partition
    for (const auto& r : consumed) {
      auto& n = next[{r.topic, r.partition}];
      n = std::max(n, r.offset + 1);
    }
    for (const auto& [tp, n] : next)
      if (!g.parts.count(tp)) {
        rewind_logged(g);
        return Error::unavailable("kafka_partition_not_assigned",
                                  "partition " + tp.first + "[" + std::to_string(tp.second) + "] is not assigned to " +
                                      name + " any more");
      }

    // Withheld duplicate copies this commit can move past too (see the file comment);
    // database sinks store positions from records, so they get a record per such partition.
    std::vector<Record> with_copies;
    for (const auto& [tp, ps] : g.parts) {
      if (ps.withheld.empty()) continue;
      auto it = next.find(tp);
      const int64_t n = it != next.end() ? it->second : -1;
      int64_t reach = n;
      for (const auto& [off, prev] : ps.withheld)
        if (prev < 0 || (reach >= 0 && prev <= reach)) reach = std::max(reach, off + 1);
      if (reach > n) {
        next[tp] = reach;
        if (g.db) {
          if (with_copies.empty()) with_copies = consumed;
          Record r;
          r.topic = tp.first;
          r.partition = tp.second;
          r.offset = reach - 1;
          with_copies.push_back(std::move(r));
        }
      }
    }
    const std::vector<Record>& to_store = with_copies.empty() ? consumed : with_copies;

    std::vector<kafka::OutMessage> msgs;
    msgs.reserve(effects.produce.size() + effects.dead_letters.size());
    for (const auto& e : effects.produce) msgs.push_back(kafka::event_message(ko(), e));
    const int64_t now = wall_ms();
    for (const auto& d : effects.dead_letters) msgs.push_back(kafka::dead_letter_message(ko(), d, now));

    Result<void> r = g.db ? commit_database(g, to_store, next, msgs, effects) : commit_transaction(g, next, msgs);
    if (!r) {
      if (g.uncertain) {
        if (auto u = resolve_uncertain(g); !u)
          log::warn("kafka transaction outcome unknown; resolved before the next poll hands anything out",
                    {{"group", name}, {"error", u.error().message}});
      } else {
        rewind_logged(g);
      }
      return r;
    }
    for (const auto& [tp, n] : next) {
      PartState& ps = g.parts[tp];
      ps.committed = std::max(ps.committed, n);
      std::erase_if(ps.withheld, [&](const auto& w) { return w.first < ps.committed; });
      if (ps.committed > ps.polled_to) ps.pending_from = ps.polled_to = -1;
    }
    return {};
  }

  // See "Uncertain transaction outcome" in the file comment. Clears g.uncertain on success.
  Result<void> resolve_uncertain(Group& g) {
    // 1. A new producer: init_transactions completes or aborts the open transaction.
    drop_transactional_producer(g);
    if (auto r = ensure_transactional_producer(g); !r) return r;
    // 2. What the broker has committed for the group (now final).
    if (g.consumer && !g.parts.empty()) {
      ListPtr list(int(g.parts.size()));
      for (const auto& [tp, ps] : g.parts)
        rd_kafka_topic_partition_list_add(list.p, kafka::prefixed(ko(), tp.first).c_str(), tp.second);
      if (auto err = rd_kafka_committed(g.consumer.get(), list.p, std::max(1000, ko().request_timeout_ms)))
        return kafka::kafka_error(err, "committed offsets of " + g.name);
      for (int i = 0; i < list.p->cnt; ++i) {
        const auto& el = list.p->elems[i];
        if (el.err) return kafka::kafka_error(el.err, "committed offset of " + g.name + " " + el.topic);
        auto it = g.parts.find({kafka::unprefixed(ko().topic_prefix, el.topic), el.partition});
        if (it != g.parts.end() && el.offset >= 0) it->second.committed = std::max(it->second.committed, el.offset);
      }
    }
    // 3. Seek to max(pending_from, committed) where records were handed out.
    if (auto r = rewind(g); !r) return r;
    g.uncertain = false;
    log::info("kafka transaction outcome resolved from the broker's committed offsets", {{"group", g.name}});
    return {};
  }

  void rewind_logged(Group& g) {
    if (auto r = rewind(g); !r)
      log::warn("kafka rewind failed; retried on the next poll", {{"group", g.name}, {"error", r.error().message}});
  }

  // Only offsets ahead of what is committed: a late commit never moves a position back.
  std::map<TopicPartition, int64_t> forward_only(const Group& g, const std::map<TopicPartition, int64_t>& next) {
    std::map<TopicPartition, int64_t> out;
    for (const auto& [tp, n] : next) {
      auto it = g.parts.find(tp);
      if (it != g.parts.end() && n > it->second.committed) out.emplace(tp, n);
    }
    return out;
  }

  Result<void> ensure_transactional_producer(Group& g) {
    if (g.txn && !g.txn_hooks.fatal) return {};
    if (g.txn) drop_transactional_producer(g);
    const auto& o = ko();
    const int txn_timeout = std::max(1000, o.transaction_timeout_ms);
    kafka::Props required = kafka::idempotent_producer_props(o);
    required["transactional.id"] = o.topic_prefix + "paystream-" + g.name + "-" + o.instance_id;
    required["transaction.timeout.ms"] = std::to_string(txn_timeout);
    // Delivery must fit in the transaction.
    required["message.timeout.ms"] = std::to_string(std::min(txn_timeout, std::max(1000, o.request_timeout_ms)));
    auto p = kafka::make_client(RD_KAFKA_PRODUCER, o, {}, required, &g.txn_hooks);
    if (!p) return p.error();
    g.txn_hooks.fatal = false;
    // Fences any earlier instance with this transactional.id and aborts its open transaction.
    ErrPtr e(rd_kafka_init_transactions(p.value().get(), txn_timeout));
    if (e) return kafka::kafka_error(e.e, "init_transactions for " + g.name);
    g.txn = std::move(p.value());
    return {};
  }

  void drop_transactional_producer(Group& g) {
    if (!g.txn) return;
    rd_kafka_purge(g.txn.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    g.txn.reset();
  }

  // Aborts the open transaction; a producer that cannot abort (or is fatally broken) is
  // dropped and recreated on the next commit (init_transactions then resolves the rest).
  // `commit_sent`: commit_transaction was called, so unless the abort is clean the
  // coordinator may still commit: the group's outcome becomes uncertain.
  Error abort_transaction(Group& g, Error why, bool fatal, bool commit_sent = false) {
    count_transaction(g.name, "aborted");
    bool clean = false;
    if (fatal || g.txn_hooks.fatal) {
      drop_transactional_producer(g);
    } else {
      ErrPtr e(rd_kafka_abort_transaction(g.txn.get(), -1));  // -1: the remaining transaction timeout
      if (e) {
        log::warn("kafka abort_transaction failed; producer recreated",
                  {{"group", g.name}, {"error", rd_kafka_error_string(e.e)}});
        drop_transactional_producer(g);
      } else {
        clean = true;
      }
    }
    if (commit_sent && !clean) {
      g.uncertain = true;
      count_transaction(g.name, "uncertain");
    }
    log::warn("kafka transaction aborted", {{"group", g.name}, {"error", why.message}});
    why.retryable = true;
    return why;
  }

  Result<void> commit_transaction(Group& g, const std::map<TopicPartition, int64_t>& next,
                                  const std::vector<kafka::OutMessage>& msgs) {
    const auto offsets = forward_only(g, next);
    if (offsets.empty() && msgs.empty()) return {};
    if (auto r = ensure_transactional_producer(g); !r) return r;
    rd_kafka_t* p = g.txn.get();
    ErrPtr e(rd_kafka_begin_transaction(p));
    if (e) {
      Error err = kafka::kafka_error(e.e, "begin_transaction for " + g.name);
      drop_transactional_producer(g);
      return err;
    }
    for (const auto& m : msgs) {
      if (auto err = kafka::produce(p, m, nullptr)) {
        kafka::count_produce_errors(double(msgs.size()));
        return abort_transaction(g, kafka::kafka_error(err, "produce to " + m.topic), false);
      }
    }
    if (!offsets.empty()) {
      ListPtr list(int(offsets.size()));
      for (const auto& [tp, n] : offsets)
        rd_kafka_topic_partition_list_add(list.p, kafka::prefixed(ko(), tp.first).c_str(), tp.second)->offset = n;
      rd_kafka_consumer_group_metadata_t* meta = rd_kafka_consumer_group_metadata(g.consumer.get());
      e.reset(rd_kafka_send_offsets_to_transaction(p, list.p, meta, std::max(1000, ko().request_timeout_ms)));
      rd_kafka_consumer_group_metadata_destroy(meta);
      if (e)
        return abort_transaction(g, kafka::kafka_error(e.e, "send_offsets_to_transaction for " + g.name),
                                 rd_kafka_error_is_fatal(e.e));
    }
    e.reset(rd_kafka_commit_transaction(p, -1));
    if (e && rd_kafka_error_is_retriable(e.e) && !rd_kafka_error_txn_requires_abort(e.e) &&
        !rd_kafka_error_is_fatal(e.e))
      e.reset(rd_kafka_commit_transaction(p, -1));  // resumable: continues the same commit
    if (e) {
      if (!msgs.empty()) kafka::count_produce_errors(double(msgs.size()));
      return abort_transaction(g, kafka::kafka_error(e.e, "commit_transaction for " + g.name),
                               rd_kafka_error_is_fatal(e.e), /*commit_sent=*/true);
    }
    rd_kafka_poll(p, 0);  // serve the producer's error callbacks
    count_transaction(g.name, "committed");
    return {};
  }

  Result<void> commit_database(Group& g, const std::vector<Record>& consumed,
                               const std::map<TopicPartition, int64_t>& next, std::vector<kafka::OutMessage> msgs,
                               const Effects& effects) {
    // 1. What goes to Kafka, acknowledged (acks=all) before the database moves.
    if (!msgs.empty()) {
      auto pub = shared_publisher();
      if (!pub) return pub.error();
      if (auto r = pub.value()->send_sync(std::move(msgs)); !r) return r;
    }
    // 2. Effects and positions in one database transaction.
    if (!consumed.empty() || !effects.empty())
      if (auto r = opts.sink->apply(g.name, consumed, effects); !r) return r;
    // 3. The same positions to Kafka, asynchronously, for lag monitoring only.
    const auto offsets = forward_only(g, next);
    if (g.consumer && !offsets.empty()) {
      ListPtr list(int(offsets.size()));
      for (const auto& [tp, n] : offsets)
        rd_kafka_topic_partition_list_add(list.p, kafka::prefixed(ko(), tp.first).c_str(), tp.second)->offset = n;
      rd_kafka_commit(g.consumer.get(), list.p, 1);
    }
    return {};
  }

  // ---------- close ----------

  void close() {
    std::vector<Group*> all;
    {
      std::lock_guard l(mu);
      if (closed) return;
      closed = true;
      for (auto& [name, g] : groups) all.push_back(g.get());
    }
    for (Group* g : all) {
      std::lock_guard l(g->mu);
      close_consumer(*g);
      drop_transactional_producer(*g);
      g->closed = true;
    }
    std::lock_guard l(pub_mu);
    publisher.reset();  // flushes what is outstanding (bounded)
  }
};

// ---------- KafkaStageLog ----------

KafkaStageLog::KafkaStageLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KafkaStageLog::~KafkaStageLog() { close(); }

Result<std::unique_ptr<KafkaStageLog>> KafkaStageLog::open(KafkaStageLogOptions opts) {
  if (opts.kafka.brokers.empty())
    return Error::invalid("kafka_config_invalid", "Kafka brokers are not configured", "brokers");
  if (!opts.database_groups.empty() && !opts.sink)
    return Error::invalid("kafka_config_invalid", "database groups need a position sink", "sink");
  kafka::count_produce_errors(0);
  return std::unique_ptr<KafkaStageLog>(new KafkaStageLog(std::make_unique<Impl>(std::move(opts))));
}

Result<std::vector<Record>> KafkaStageLog::poll(const std::string& group, const std::vector<std::string>& topics,
                                                size_t max, std::chrono::milliseconds wait) {
  return impl_->poll(group, topics, max, wait);
}

Result<void> KafkaStageLog::commit(const std::string& group, const std::vector<Record>& consumed, Effects effects) {
  return impl_->commit(group, consumed, std::move(effects));
}

void KafkaStageLog::close() { impl_->close(); }

}  // namespace ps
