// librdkafka plumbing shared by the Kafka adapters: client construction, callbacks that
// route librdkafka's logs and errors to ps::log, error conversion, produce and metadata.
#include <algorithm>
#include <cstring>

#include "adapters/kafka/kafka_internal.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"

namespace ps::kafka {
namespace {

ClientHooks* hooks_of(const rd_kafka_t* rk) { return static_cast<ClientHooks*>(rd_kafka_opaque(rk)); }

std::string what_of(const rd_kafka_t* rk) {
  const ClientHooks* h = hooks_of(rk);
  return h && !h->what.empty() ? h->what : std::string(rd_kafka_name(rk));
}

void on_log(const rd_kafka_t* rk, int level, const char* fac, const char* buf) {
  // syslog levels: 0-3 error, 4 warning, 5-6 notice/info, 7 debug.
  log::Level l = level <= 3 ? log::Level::error : level == 4 ? log::Level::warn
               : level <= 6 ? log::Level::info : log::Level::debug;
  log::write(l, "librdkafka", {{"client", what_of(rk)}, {"facility", fac ? fac : ""}, {"detail", buf ? buf : ""}});
}

void on_error(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
  auto* h = static_cast<ClientHooks*>(opaque);
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char buf[512] = {0};
    rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof buf);
    log::error("kafka client fatal error", {{"client", what_of(rk)}, {"code", rd_kafka_err2name(orig)}, {"error", buf}});
    if (h) h->fatal = true;
    return;
  }
  // Transport errors and "all brokers down" are retried by librdkafka itself.
  log::warn("kafka client error", {{"client", what_of(rk)},
                                   {"code", rd_kafka_err2name(rd_kafka_resp_err_t(err))},
                                   {"error", reason ? reason : ""}});
}

bool is_timeout(rd_kafka_resp_err_t err) {
  return err == RD_KAFKA_RESP_ERR__TIMED_OUT || err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT ||
         err == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT || err == RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE;
}

}  // namespace

void RkDeleter::operator()(rd_kafka_t* rk) const {
  if (rk) rd_kafka_destroy(rk);
}

void count_produce_errors(double n) {
  metrics::registry()
      .counter("paystream_kafka_produce_errors_total", "Kafka messages that could not be produced")
      .inc(n);
}

Error kafka_error(rd_kafka_resp_err_t err, const std::string& what) {
  std::string msg = what + ": " + rd_kafka_err2str(err) + " (" + rd_kafka_err2name(err) + ")";
  if (is_timeout(err)) return Error::timeout(std::move(msg));
  return Error::unavailable("kafka_unavailable", std::move(msg));
}

Error kafka_error(const rd_kafka_error_t* e, const std::string& what) {
  if (!e) return Error::internal(what + ": unknown Kafka error");
  const rd_kafka_resp_err_t code = rd_kafka_error_code(e);
  std::string msg = what + ": " + rd_kafka_error_string(e) + " (" + rd_kafka_error_name(e) + ")";
  if (is_timeout(code)) return Error::timeout(std::move(msg));
  return Error::unavailable("kafka_unavailable", std::move(msg));
}

Props idempotent_producer_props(const KafkaOptions& o) {
  const std::string timeout = std::to_string(std::max(1000, o.request_timeout_ms));
  return {{"enable.idempotence", "true"},
          {"acks", "all"},
          // murmur2 like the Java client, so a key lands on the same partition whichever
          // client produced it.
          {"partitioner", "murmur2_random"},
          // Bounds the time from produce to the delivery report (success or failure).
          {"message.timeout.ms", timeout},
          {"request.timeout.ms", timeout}};
}

Result<RkPtr> make_client(rd_kafka_type_t type, const KafkaOptions& o, const Props& defaults,
                          const Props& required, ClientHooks* hooks,
                          const std::function<void(rd_kafka_conf_t*)>& setup) {
  if (o.brokers.empty()) return Error::invalid("kafka_config_invalid", "Kafka brokers are not configured", "brokers");
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  std::optional<Error> bad;
  auto set = [&](const std::string& k, const std::string& v) {
    if (bad) return;
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
      bad = Error::invalid("kafka_config_invalid", "Kafka property " + k + ": " + errstr, k);
  };
  set("bootstrap.servers", o.brokers);
  set("client.id", o.client_id);
  set("log.connection.close", "false");  // idle connections closed by the broker are normal
  for (const auto& [k, v] : defaults) set(k, v);
  for (const auto& [k, v] : o.extra) set(k, v);
  for (const auto& [k, v] : o.security) set(k, v);
  for (const auto& [k, v] : required) set(k, v);
  if (bad) {
    rd_kafka_conf_destroy(conf);
    return *bad;
  }
  rd_kafka_conf_set_opaque(conf, hooks);
  rd_kafka_conf_set_log_cb(conf, on_log);
  rd_kafka_conf_set_error_cb(conf, on_error);
  if (setup) setup(conf);
  rd_kafka_t* rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
  if (!rk) {
    rd_kafka_conf_destroy(conf);  // still ours when rd_kafka_new fails
    return Error::invalid("kafka_config_invalid", std::string("Kafka client: ") + errstr);
  }
  return RkPtr(rk);
}

rd_kafka_resp_err_t produce(rd_kafka_t* rk, const OutMessage& m, void* opaque) {
  rd_kafka_headers_t* hdrs = rd_kafka_headers_new(m.headers.size());
  for (const auto& [k, v] : m.headers) rd_kafka_header_add(hdrs, k.data(), ssize_t(k.size()), v.data(), ssize_t(v.size()));
  // An empty key is no key (the partitioner then spreads such messages).
  void* key = m.key.empty() ? nullptr : const_cast<char*>(m.key.data());
  rd_kafka_resp_err_t err =
      rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(m.topic.c_str()), RD_KAFKA_V_KEY(key, m.key.size()),
                        RD_KAFKA_V_VALUE(const_cast<char*>(m.value.data()), m.value.size()),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
                        RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
  if (err) rd_kafka_headers_destroy(hdrs);  // owned by the message only on success
  return err;
}

InMessage in_message(const rd_kafka_message_t* m) {
  InMessage out;
  if (m->rkt) out.topic = rd_kafka_topic_name(m->rkt);
  out.partition = m->partition;
  out.offset = m->offset;
  rd_kafka_timestamp_type_t tstype;
  const int64_t ts = rd_kafka_message_timestamp(m, &tstype);
  out.timestamp_ms = tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts;
  if (m->key) out.key.assign(static_cast<const char*>(m->key), m->key_len);
  if (m->payload) out.value.assign(static_cast<const char*>(m->payload), m->len);
  rd_kafka_headers_t* hdrs = nullptr;
  if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
    const char* name;
    const void* val;
    size_t size;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
      out.headers.emplace_back(name, val ? std::string(static_cast<const char*>(val), size) : std::string());
  }
  return out;
}

Result<int> partition_count(rd_kafka_t* rk, const std::string& topic, int timeout_ms) {
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  if (!rkt) return kafka_error(rd_kafka_last_error(), "topic handle " + topic);
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
  rd_kafka_topic_destroy(rkt);
  if (err) return kafka_error(err, "metadata of " + topic);
  Result<int> out = Error::not_found("topic " + topic + " does not exist");
  for (int i = 0; i < md->topic_cnt; ++i) {
    const auto& t = md->topics[i];
    if (topic != t.topic) continue;
    if (t.err == RD_KAFKA_RESP_ERR_NO_ERROR && t.partition_cnt > 0) out = t.partition_cnt;
    else if (t.err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) out = kafka_error(t.err, "metadata of " + topic);
  }
  rd_kafka_metadata_destroy(md);
  return out;
}

}  // namespace ps::kafka

namespace ps {

Result<void> check_client_properties(const std::map<std::string, std::string>& props) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  for (const auto& [k, v] : props) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return Error::invalid("kafka_config_invalid", "Kafka property " + k + ": " + errstr, k);
    }
  }
  // No bootstrap.servers: the handle knows no broker and opens no connection. Its own logs
  // (none expected) are dropped; the error string is what matters.
  rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t*, int, const char*, const char*) {});
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    return Error::invalid("kafka_config_invalid", std::string("Kafka client: ") + errstr);
  }
  rd_kafka_destroy(rk);
  return ok();
}

namespace {

// The probe's hooks: the first refusal (TLS handshake or SASL authentication) seen.
struct ProbeHooks : kafka::ClientHooks {
  std::mutex mu;
  std::string refused;
};

void on_probe_error(rd_kafka_t*, int err, const char* reason, void* opaque) {
  auto* h = static_cast<ProbeHooks*>(static_cast<kafka::ClientHooks*>(opaque));
  const auto code = rd_kafka_resp_err_t(err);
  if (code != RD_KAFKA_RESP_ERR__AUTHENTICATION && code != RD_KAFKA_RESP_ERR__SSL) return;
  std::lock_guard l(h->mu);
  if (h->refused.empty()) h->refused = std::string(reason ? reason : "") + " (" + rd_kafka_err2name(code) + ")";
}

}  // namespace

Result<void> check_broker_access(const KafkaOptions& o, std::chrono::milliseconds wait) {
  ProbeHooks hooks;
  hooks.what = "start-up check";
  KafkaOptions po = o;
  po.client_id = o.client_id + "-check";
  auto c = kafka::make_client(RD_KAFKA_PRODUCER, po, {}, {}, &hooks,
                              [](rd_kafka_conf_t* conf) { rd_kafka_conf_set_error_cb(conf, on_probe_error); });
  if (!c) return c.error();
  rd_kafka_t* rk = c->get();
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (true) {
    const rd_kafka_metadata_t* md = nullptr;
    // Brokers only (no topics): one small request once a connection is up.
    const rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, nullptr, &md, 250);
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_poll(rk, 0);  // serves the error callback
    {
      std::lock_guard l(hooks.mu);
      if (!hooks.refused.empty())
        return Error::invalid("kafka_access_refused", "Kafka refused the connection: " + hooks.refused);
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return ok();
    if (std::chrono::steady_clock::now() >= deadline) {
      log::warn("kafka start-up check: no broker answered; continuing (the clients keep retrying)",
                {{"waited_ms", std::to_string(wait.count())}});
      return ok();
    }
  }
}

}  // namespace ps
