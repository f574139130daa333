#include "bench/worker_result.hpp"

#include <algorithm>
#include <boost/json.hpp>

namespace ps::bench {
namespace json = boost::json;

uint64_t WorkerResult::errors_total() const {
  uint64_t n = timeout + io + connect + replay_mismatch;
  for (const auto& [s, c] : by_status) n += c;
  return n;
}

void WorkerResult::merge(const WorkerResult& o) {
  scheduled += o.scheduled;
  requests += o.requests;
  responses += o.responses;
  status_2xx += o.status_2xx;
  ok_slot_halves += o.ok_slot_halves;
  conflicts_409 += o.conflicts_409;
  replays_ok += o.replays_ok;
  replay_mismatch += o.replay_mismatch;
  pair_mismatch += o.pair_mismatch;
  timeout += o.timeout;
  io += o.io;
  connect += o.connect;
  for (const auto& [s, c] : o.by_status) by_status[s] += c;
  connections_open_at_start += o.connections_open_at_start;
  connections_open_max += o.connections_open_max;
  if (o.start_ns && (!start_ns || o.start_ns < start_ns)) start_ns = o.start_ns;
  last_response_ns = std::max(last_response_ns, o.last_response_ns);
  latency_us.merge(o.latency_us);
  accepted.insert(accepted.end(), o.accepted.begin(), o.accepted.end());
}

std::string WorkerResult::to_json() const {
  json::object o;
  o["scheduled"] = scheduled;
  o["requests"] = requests;
  o["responses"] = responses;
  o["status_2xx"] = status_2xx;
  o["ok_slot_halves"] = ok_slot_halves;
  o["conflicts_409"] = conflicts_409;
  o["replays_ok"] = replays_ok;
  o["replay_mismatch"] = replay_mismatch;
  o["pair_mismatch"] = pair_mismatch;
  o["timeout"] = timeout;
  o["io"] = io;
  o["connect"] = connect;
  json::object bs;
  for (const auto& [s, c] : by_status) bs[std::to_string(s)] = c;
  o["by_status"] = std::move(bs);
  o["connections_open_at_start"] = connections_open_at_start;
  o["connections_open_max"] = connections_open_max;
  o["start_ns"] = start_ns;
  o["last_response_ns"] = last_response_ns;
  o["latency_us"] = latency_us.serialize();
  json::array acc;
  acc.reserve(accepted.size());
  for (const auto& [k, id] : accepted) acc.push_back(json::array{json::value(k), json::value(id)});
  o["accepted"] = std::move(acc);
  return json::serialize(o);
}

Result<WorkerResult> WorkerResult::from_json(const std::string& text) {
  try {
    json::object o = json::parse(text).as_object();
    WorkerResult r;
    auto u = [&](const char* k) { return o.at(k).to_number<uint64_t>(); };
    r.scheduled = u("scheduled");
    r.requests = u("requests");
    r.responses = u("responses");
    r.status_2xx = u("status_2xx");
    r.ok_slot_halves = u("ok_slot_halves");
    r.conflicts_409 = u("conflicts_409");
    r.replays_ok = u("replays_ok");
    r.replay_mismatch = u("replay_mismatch");
    r.pair_mismatch = u("pair_mismatch");
    r.timeout = u("timeout");
    r.io = u("io");
    r.connect = u("connect");
    for (const auto& kv : o.at("by_status").as_object())
      r.by_status[std::stoi(std::string(kv.key()))] = kv.value().to_number<uint64_t>();
    r.connections_open_at_start = u("connections_open_at_start");
    r.connections_open_max = u("connections_open_max");
    r.start_ns = o.at("start_ns").to_number<int64_t>();
    r.last_response_ns = o.at("last_response_ns").to_number<int64_t>();
    auto h = Histogram::parse(o.at("latency_us").as_string());
    if (!h) return Error::internal("worker result: bad histogram");
    r.latency_us = std::move(*h);
    for (const auto& a : o.at("accepted").as_array()) {
      const auto& pair = a.as_array();
      r.accepted.emplace_back(std::string(pair.at(0).as_string()), std::string(pair.at(1).as_string()));
    }
    return r;
  } catch (const std::exception& e) {
    return Error::internal(std::string("worker result unreadable: ") + e.what());
  }
}

}  // namespace ps::bench
