-- wrk script: POST the ~1 KB Chinese ticket of bench/post_ticket.lua to django-helpdesk's API.
--   wrk ... -s bench/post_peer_ticket.lua URL -- TOKEN QUEUE_ID
-- DRF token authentication (what the API's staff users use; Basic auth would hash a password
-- with PBKDF2 on every request and measure that instead of ticket creation).
-- Runs after bench/wrk_common.lua (thread numbers, the JSON summary line).
local counter = 0
local queue = 0

function init(args)
  queue = tonumber(args[2])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Token " .. args[1]
end

-- The ticket text of intake's case (TICKET_TEXT); helpdesk has no address or phone fields, so
-- they go in the description, and the body is the same size.
function request()
  counter = counter + 1
  local body = string.format(
    '{"queue":%d,"title":"路灯不亮 bench-%d-%d","description":"%s\\n地址：枫桥市越城区北海街道塔山社区\\n电话：13812345678","priority":3}',
    queue, tid, counter, TICKET_TEXT)
  return wrk.format(nil, nil, nil, body)
end
