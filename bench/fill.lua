-- Fills the relay's dedup store: FILL_COUNT requests with unique messageIds (prefix
-- FILL_PREFIX plus the wrk thread's number), then only health probes. bench.py stops wrk once
-- the relay's lipachat_relay_dedup_entries gauge reaches the count it wants.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local count = tonumber(os.getenv("FILL_COUNT"))
local prefix = os.getenv("FILL_PREFIX")
local sent = 0

function request()
  sent = sent + 1
  if sent > count then
    return wrk.format("GET", "/healthz")
  end
  local body = '{"messageId":"' .. prefix .. '-t' .. (tid or 0) .. '-' .. sent .. '","mediaType":"IMAGE",'
    .. '"mediaUrl":"https://cdn.example.com/img/1.png","caption":"hello",'
    .. '"from":"254110090747","to":"254712345678"}'
  return wrk.format("POST", "/media", {["Content-Type"] = "application/json"}, body)
end
