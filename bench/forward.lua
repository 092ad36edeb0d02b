-- The relay's forward path: a new messageId for every request. The prefix holds the start
-- time, a random number and the wrk thread's number, so rounds, threads and runs never
-- replay each other's ids.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local prefix, counter = nil, 0
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + (tid or 0) * 7919)
  prefix = string.format("fw%d-%d-t%d", os.time(), math.random(1, 1e9), tid or 0)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  counter = counter + 1
  local body = '{"messageId":"' .. prefix .. '-' .. counter .. '","mediaType":"IMAGE",'
    .. '"mediaUrl":"https://cdn.example.com/img/1.png","caption":"hello",'
    .. '"from":"254110090747","to":"254712345678"}'
  return wrk.format(nil, "/media", nil, body)
end
