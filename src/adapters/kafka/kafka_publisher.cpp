// KafkaPublisher: an idempotent producer (acks=all) whose delivery reports are served by a
// dedicated thread; a publish() call's callback runs once all of its messages are
// acknowledged, or at its first failure.
#include <future>

#include "adapters/kafka/kafka_internal.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"

namespace ps {
namespace {
constexpr int kPollMs = 50;                       // poll thread slice (also deferred-callback latency)
constexpr auto kSyncMargin = std::chrono::seconds(5);  // send_sync: beyond message.timeout.ms
constexpr auto kReplaceBackoff = std::chrono::seconds(1);
}  // namespace

// One send() call. `remaining` counts messages without a final delivery report yet.
struct KafkaPublisher::Impl::Batch {
  Callback cb;                      // taken (under mu_) by whoever reports the outcome
  std::atomic<size_t> remaining{0};
  bool called = false;              // guarded by Impl::mu_
  uint64_t seq = 0;                 // key in live_ (addresses may be reused, numbers are not)
};

KafkaPublisher::Impl::Impl(KafkaOptions o) : opts(std::move(o)) {}

Result<std::unique_ptr<KafkaPublisher::Impl>> KafkaPublisher::Impl::open(const KafkaOptions& o, std::string what) {
  std::unique_ptr<Impl> impl(new Impl(o));
  impl->what = std::move(what);
  auto rk = impl->make_producer();
  if (!rk) return rk.error();
  impl->rk_ = std::move(rk.value());
  // Export the error counter at 0 from the start, so an alert can see its first increase.
  kafka::count_produce_errors(0);
  impl->poller_ = std::thread([p = impl.get()] { p->poll_loop(); });
  return impl;
}

Result<kafka::RkPtr> KafkaPublisher::Impl::make_producer() {
  return kafka::make_client(RD_KAFKA_PRODUCER, opts, {}, kafka::idempotent_producer_props(opts), this,
                            [](rd_kafka_conf_t* conf) { rd_kafka_conf_set_dr_msg_cb(conf, &Impl::on_delivery); });
}

KafkaPublisher::Impl::~Impl() {
  flush(std::chrono::milliseconds(std::max(1000, opts.request_timeout_ms)));
  stop_ = true;
  if (poller_.joinable()) poller_.join();
  std::set<uint64_t> live;
  {
    std::lock_guard g(mu_);
    for (const auto& kv : live_) live.insert(kv.first);
  }
  drain_and_destroy(std::move(rk_), std::move(live), std::chrono::milliseconds(1000));
  run_deferred();
}

void KafkaPublisher::Impl::send(std::vector<kafka::OutMessage> msgs, Callback cb) {
  auto* b = new Batch;
  b->cb = std::move(cb);
  b->remaining = msgs.size() + 1;  // +1: held by this call until every message is enqueued
  {
    std::lock_guard g(mu_);
    b->seq = ++next_seq_;
    live_.emplace(b->seq, b);
  }
  size_t enqueued = 0;
  // The shared lock is held until the hold is released, so replace_producer() never sees
  // a batch that a sender is still working on.
  std::shared_lock l(rk_mu_);
  for (const auto& m : msgs) {
    rd_kafka_resp_err_t err = kafka::produce(rk_.get(), m, b);
    if (err) {
      kafka::count_produce_errors(double(msgs.size() - enqueued));
      fail_batch(b, kafka::kafka_error(err, "produce to " + m.topic));
      break;
    }
    ++enqueued;
  }
  release(b, msgs.size() - enqueued + 1);
}

Result<void> KafkaPublisher::Impl::send_sync(std::vector<kafka::OutMessage> msgs) {
  auto done = std::make_shared<std::promise<Result<void>>>();
  auto fut = done->get_future();
  send(std::move(msgs), [done](Result<void> r) { done->set_value(std::move(r)); });
  const auto limit = std::chrono::milliseconds(std::max(1000, opts.request_timeout_ms)) + kSyncMargin;
  if (fut.wait_for(limit) != std::future_status::ready)
    return Error::timeout("Kafka delivery not confirmed within " + std::to_string(limit.count()) + " ms");
  return fut.get();
}

void KafkaPublisher::Impl::flush(std::chrono::milliseconds timeout) {
  std::unique_lock l(mu_);
  idle_cv_.wait_for(l, timeout, [&] { return live_.empty(); });
}

void KafkaPublisher::Impl::on_delivery(rd_kafka_t* rk, const rd_kafka_message_t* m, void* opaque) {
  auto* self = static_cast<Impl*>(static_cast<kafka::ClientHooks*>(opaque));
  auto* b = static_cast<Batch*>(m->_private);
  if (!b) return;
  if (m->err) {
    kafka::count_produce_errors();
    self->fail_batch(b, kafka::kafka_error(m->err, std::string("delivery to ") + rd_kafka_topic_name(m->rkt)));
  }
  self->release(b, 1);
}

void KafkaPublisher::Impl::fail_batch(Batch* b, const Error& e) {
  std::lock_guard g(mu_);
  if (b->called) return;
  b->called = true;
  // Always from the poll thread: send() may be called with the caller's locks held.
  deferred_.push_back([cb = std::move(b->cb), e] { cb(e); });
}

void KafkaPublisher::Impl::release(Batch* b, size_t n) {
  if (b->remaining.fetch_sub(n) != n) return;
  {
    std::lock_guard g(mu_);
    live_.erase(b->seq);
    if (!b->called) {
      b->called = true;
      deferred_.push_back([cb = std::move(b->cb)] { cb(Result<void>()); });
    }
    if (live_.empty()) idle_cv_.notify_all();
  }
  delete b;
}

void KafkaPublisher::Impl::run_deferred() {
  std::deque<std::function<void()>> todo;
  {
    std::lock_guard g(mu_);
    todo.swap(deferred_);
  }
  for (auto& f : todo) f();
}

void KafkaPublisher::Impl::poll_loop() {
  auto next_replace = std::chrono::steady_clock::now();
  while (!stop_) {
    {
      std::shared_lock l(rk_mu_);
      rd_kafka_poll(rk_.get(), kPollMs);
    }
    run_deferred();
    if (fatal && std::chrono::steady_clock::now() >= next_replace) {
      replace_producer();
      next_replace = std::chrono::steady_clock::now() + kReplaceBackoff;
    }
  }
}

void KafkaPublisher::Impl::replace_producer() {
  // An idempotent producer cannot recover from a fatal error (e.g. a broken sequence):
  // fail what it holds and carry on with a new one.
  auto fresh = make_producer();
  if (!fresh) {
    log::error("kafka producer could not be recreated", {{"client", what}, {"error", fresh.error().message}});
    return;
  }
  kafka::RkPtr old;
  std::set<uint64_t> on_old;
  {
    // No sender holds the shared lock now, so every live batch belongs to the old handle.
    std::unique_lock l(rk_mu_);
    old = std::move(rk_);
    rk_ = std::move(fresh.value());
    fatal = false;
    std::lock_guard g(mu_);
    for (const auto& kv : live_) on_old.insert(kv.first);
  }
  log::warn("kafka producer recreated after a fatal error", {{"client", what}});
  drain_and_destroy(std::move(old), std::move(on_old), std::chrono::milliseconds(1000));
}

void KafkaPublisher::Impl::drain_and_destroy(kafka::RkPtr rk, std::set<uint64_t> before,
                                             std::chrono::milliseconds wait) {
  if (!rk) return;
  // Purged messages get failed delivery reports on the next polls; whatever of `before`
  // is still unreported after `wait` is failed here once the handle is gone.
  rd_kafka_purge(rk.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (rd_kafka_outq_len(rk.get()) > 0 && std::chrono::steady_clock::now() < deadline) rd_kafka_poll(rk.get(), 20);
  rd_kafka_poll(rk.get(), 0);
  rk.reset();
  std::vector<Batch*> orphans;
  {
    std::lock_guard g(mu_);
    for (uint64_t seq : before)
      if (auto it = live_.find(seq); it != live_.end()) orphans.push_back(it->second);
  }
  for (Batch* b : orphans) {
    kafka::count_produce_errors();
    fail_batch(b, Error::unavailable("kafka_unavailable", "Kafka producer closed before delivery was confirmed"));
    release(b, b->remaining.load());
  }
  run_deferred();
}

// ---------- KafkaPublisher ----------

KafkaPublisher::KafkaPublisher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KafkaPublisher::~KafkaPublisher() = default;

Result<std::unique_ptr<KafkaPublisher>> KafkaPublisher::open(const KafkaOptions& opts) {
  auto impl = Impl::open(opts, "publisher");
  if (!impl) return impl.error();
  return std::unique_ptr<KafkaPublisher>(new KafkaPublisher(std::move(impl.value())));
}

void KafkaPublisher::publish(std::vector<Event> events, Callback cb) {
  std::vector<kafka::OutMessage> msgs;
  msgs.reserve(events.size());
  for (const auto& e : events) msgs.push_back(kafka::event_message(impl_->opts, e));
  impl_->send(std::move(msgs), std::move(cb));
}

void KafkaPublisher::publish_dead_letter(DeadLetter letter, Callback cb) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::vector<kafka::OutMessage> msgs{kafka::dead_letter_message(impl_->opts, letter, now)};
  impl_->send(std::move(msgs), std::move(cb));
}

void KafkaPublisher::flush(std::chrono::milliseconds timeout) { impl_->flush(timeout); }

}  // namespace ps
