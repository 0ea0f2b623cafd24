-- wrk script: POST one CSV batch file per request (text/csv), rows from a template file.
--   wrk ... -s bench/post_batch.lua URL -- /path/to/template.csv
-- The template's first line is the header; every other line starts with the row's own part of
-- the external id, to which each request prepends its own prefix, so every file is new.
-- Prints a JSON line with p50 / p99 latency (microseconds) and counts when done.
local counter = 0
local threads = {}
local header = nil
local rows = {}
local started = os.time()

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "r"))
  header = file:read("*l")
  for line in file:lines() do
    if #line > 0 then rows[#rows + 1] = line end
  end
  file:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "text/csv; charset=utf-8"
end

function request()
  counter = counter + 1
  local prefix = string.format("B%d-%d-%d-", started, tid, counter)
  local parts = { header }
  for i = 1, #rows do
    parts[i + 1] = prefix .. rows[i]
  end
  return wrk.format(nil, nil, nil, table.concat(parts, "\n") .. "\n")
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
