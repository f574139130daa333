// Shared by the PostgreSQL tests (and the Distributed contract harness): the server from
// PAYSTREAM_POSTGRES_URL (a missing variable fails the test, never skips it), a fresh
// schema per test, a raw connection for SQL the store would never run, and a recording
// EventPublisher.
//
// RecordingPublisher is a test double of the EventPublisher port, used where a test is
// about the PostgreSQL side (outbox, relay, callbacks); the real Kafka publisher has its
// own tests and runs behind the Distributed contract harness.
#pragma once
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "adapters/postgres/pg_conn.hpp"
#include "adapters/postgres/pg_store.hpp"
#include "domain/ids.hpp"
#include "ports/event_publisher.hpp"

namespace ps::pg_test {

// PAYSTREAM_POSTGRES_URL, or "" after recording a failure (callers ASSERT on it).
inline std::string url() {
  const char* v = std::getenv("PAYSTREAM_POSTGRES_URL");
  if (!v || !*v) {
    ADD_FAILURE() << "PAYSTREAM_POSTGRES_URL is not set (scripts/test.sh starts PostgreSQL and exports it)";
    return {};
  }
  return v;
}

// The URL with application_name set, so a test can find (and kill) its own backends.
inline std::string with_app_name(const std::string& url, const std::string& app) {
  if (url.rfind("postgres", 0) == 0)
    return url + (url.find('?') == std::string::npos ? "?" : "&") + "application_name=" + app;
  return url + " application_name=" + app;
}

inline std::string unique_schema() { return "pst_" + random_token("", 6); }

// A raw connection (search_path = schema).
inline std::unique_ptr<pg::Conn> raw(const std::string& url, const std::string& schema) {
  auto c = pg::Conn::connect(pg::ConnOptions{url, schema, 3000, 10000});
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
  return c.ok() ? std::move(c.value()) : nullptr;
}

inline void drop_schema(const std::string& url, const std::string& schema) {
  if (url.empty() || schema.empty()) return;
  auto c = raw(url, "");
  if (c) (void)c->exec_script("DROP SCHEMA IF EXISTS " + c->quote_ident(schema) + " CASCADE");
}

// Waits up to `limit` for `pred`.
inline bool eventually(const std::function<bool()>& pred,
                       std::chrono::milliseconds limit = std::chrono::milliseconds(10000)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

class RecordingPublisher final : public EventPublisher {
 public:
  void publish(std::vector<Event> events, Callback cb) override {
    {
      std::lock_guard g(mu_);
      ++calls_;
      if (!fail) events_.insert(events_.end(), events.begin(), events.end());
    }
    if (fail) cb(Error::unavailable("broker_down", "recording publisher told to fail"));
    else cb({});
  }
  void publish_dead_letter(DeadLetter letter, Callback cb) override {
    {
      std::lock_guard g(mu_);
      ++calls_;
      if (!fail) letters_.push_back(std::move(letter));
    }
    if (fail) cb(Error::unavailable("broker_down", "recording publisher told to fail"));
    else cb({});
  }
  std::vector<Event> events() {
    std::lock_guard g(mu_);
    return events_;
  }
  std::vector<DeadLetter> letters() {
    std::lock_guard g(mu_);
    return letters_;
  }
  int calls() {
    std::lock_guard g(mu_);
    return calls_;
  }
  std::atomic<bool> fail{false};

 private:
  std::mutex mu_;
  std::vector<Event> events_;
  std::vector<DeadLetter> letters_;
  int calls_ = 0;
};

}  // namespace ps::pg_test
