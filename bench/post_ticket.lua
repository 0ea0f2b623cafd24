-- wrk script: POST one ~1 KB ticket per request, each with its own channel id.
-- Runs after bench/wrk_common.lua (thread numbers, the JSON summary line).
local counter = 0
local thread_id = 0

function init(args)
  thread_id = tid
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"external_id":"bench-%d-%d-%d","title":"路灯不亮","content":"%s","citizen_phone":"13812345678","address":"枫桥市越城区北海街道塔山社区","category_code":"0102"}',
    os.time(), thread_id, counter, TICKET_TEXT)
  return wrk.format(nil, nil, nil, body)
end

