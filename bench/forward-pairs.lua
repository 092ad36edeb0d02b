-- The relay's forward path with the rate limits on: a new messageId AND a new `to` for every
-- request, so each request is a new (from, to) pair key, the pair limiter's worst case. The
-- messageId prefix is forward.lua's; `to` counts up from a random 8-digit start per thread,
-- so rounds and runs practically never repeat a pair (and a repeat would not be limited:
-- a pair allows a burst of 45).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local prefix, counter, base = nil, 0, 0
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + (tid or 0) * 7919)
  prefix = string.format("fp%d-%d-t%d", os.time(), math.random(1, 1e9), tid or 0)
  base = math.random(0, 99999999)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  counter = counter + 1
  local to = string.format("2547%08d", (base + counter) % 100000000)
  local body = '{"messageId":"' .. prefix .. '-' .. counter .. '","mediaType":"IMAGE",'
    .. '"mediaUrl":"https://cdn.example.com/img/1.png","caption":"hello",'
    .. '"from":"254110090747","to":"' .. to .. '"}'
  return wrk.format(nil, "/media", nil, body)
end
