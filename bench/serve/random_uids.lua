-- wrk script: every request is a :predict of INSTANCES (default 100) instances with random user
-- ids, so that over a run the requests touch every page of a large hashed model. Prints a JSON
-- summary (as predict.lua) when the run ends.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = tonumber(os.getenv("INSTANCES") or "100")
local non2xx = 0

request = function()
  local t = {}
  for i = 1, n do
    t[i] = string.format('{"uid": "u%d"}', math.random(1, 1000000000))
  end
  return wrk.format(nil, nil, nil, '{"instances": [' .. table.concat(t, ", ") .. ']}')
end
response = function(status, headers, body)
  if status ~= 200 then
    non2xx = non2xx + 1
  end
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "socket_errors": %d, "non2xx": %d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    errors, non2xx))
end
