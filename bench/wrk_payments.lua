-- wrk script: POST /v1/payments with a unique Idempotency-Key per request.
-- Usage: API_KEY=sk_... wrk -t2 -c64 -d10s -s bench/wrk_payments.lua http://127.0.0.1:8080
-- Each wrk thread gets its own prefix so keys never collide across threads or runs.
local counter = 0
prefix = ""  -- global: setup() sets it per thread with thread:set
local api_key = os.getenv("API_KEY") or ""
local body = '{"amount":1000,"currency":"EUR","source":"tok_approve"}'

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("prefix", string.format("wrk-%d-%d-", os.time(), math.random(1, 1000000000)))
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/payments", {
    ["Authorization"] = "Bearer " .. api_key,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. counter,
  }, body)
end

statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("non-2xx/3xx: %d, timeouts: %d\n", summary.errors.status, summary.errors.timeout))
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do io.write(string.format("status %d: %d\n", status, n)) end
  end
end
