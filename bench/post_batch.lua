-- wrk script: POST one CSV batch file per request (text/csv), rows from a template file.
--   wrk ... -s bench/post_batch.lua URL -- /path/to/template.csv
-- The template's first line is the header; every other line starts with the row's own part of
-- the external id, to which each request prepends its own prefix, so every file is new.
-- Runs after bench/wrk_common.lua (thread numbers, the JSON summary line).
local counter = 0
local header = nil
local rows = {}
local started = os.time()

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

