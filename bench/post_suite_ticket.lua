-- wrk script: POST distinct ~1 KB Chinese tickets to intake, for the whole-suite case.
--   wrk ... -s bench/post_suite_ticket.lua URL -- /path/to/ingredients.tsv
-- The file (written by bench/suite.py) holds lead lines "L<TAB>code<TAB>title<TAB>address<TAB>text"
-- (a real address of the demo city, so grids resolve and dispatch routes by area) and detail
-- lines "D<TAB>sentence". Each request takes a random lead and six random details, its own
-- citizen phone and its own external id: distinct tickets, few of them repeats of another.
-- Runs after bench/wrk_common.lua (thread numbers, the JSON summary line).
local counter = 0
local leads = {}
local details = {}
local started = os.time()

local function json_escape(s)
  return (s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end))
end

function init(args)
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    local kind, rest = line:match("^(%a)\t(.*)$")
    if kind == "L" then
      local code, title, address, text = rest:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      leads[#leads + 1] = { code, json_escape(title), json_escape(address), json_escape(text) }
    elseif kind == "D" then
      details[#details + 1] = json_escape(rest)
    end
  end
  file:close()
  assert(#leads > 0 and #details > 0, "no ingredients in " .. args[1])
  math.randomseed(started * 100 + tid)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Fengqiao-Role"] = "hotline"
end

function request()
  counter = counter + 1
  local lead = leads[math.random(#leads)]
  local parts = { lead[4] }
  for i = 2, 7 do
    parts[i] = details[math.random(#details)]
  end
  local body = string.format(
    '{"external_id":"suite-%d-%d-%d","title":"%s","content":"%s","citizen_phone":"1%d%d%08d",'
      .. '"address":"%s","category_code":"%s"}',
    started, tid, counter, lead[2], table.concat(parts), 3 + (tid % 7), tid % 10,
    counter % 100000000, lead[3], lead[1])
  return wrk.format(nil, nil, nil, body)
end

