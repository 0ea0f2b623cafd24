-- wrk script: POST one ~1 KB ticket per request, each with its own channel id.
-- Prints a JSON line with p50 / p99 latency (microseconds) and counts when done.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local filler = string.rep("小区门口的路灯已经坏了三天，晚上老人孩子出行很不方便，希望尽快修复。", 6)

function request()
  counter = counter + 1
  local body = string.format(
    '{"external_id":"bench-%d-%d-%d","title":"路灯不亮","content":"%s","citizen_phone":"13812345678","address":"枫桥市越城区北海街道塔山社区","category_code":"0102"}',
    os.time(), thread_id, counter, filler)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,"timeouts":%d,'
      .. '"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, errors, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
