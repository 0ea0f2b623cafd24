-- Shared by every wrk script of the benchmarks: bench/intake.py's run_wrk puts this file before
-- the case's own script (which defines init and request).
-- Each thread gets its number as the global ``tid``; when done, one JSON line with p50 / p99
-- latency (microseconds) and counts is printed for the Python side to read.
local threads = {}

-- The ~1 KB Chinese ticket text of the single-POST cases: intake and the peer get the same.
TICKET_TEXT = string.rep("小区门口的路灯已经坏了三天，晚上老人孩子出行很不方便，希望尽快修复。", 6)

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
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
