-- wrk script: POSTs one :predict request (one Elec2 instance) and prints a JSON summary with the
-- throughput, latency percentiles and error counts when the run ends.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BODY") or
  '{"instances": [{"nswprice": 0.056, "nswdemand": 0.44, "vicprice": 0.003, "vicdemand": 0.42, "transfer": 0.41, "period": 0.5}]}'

local non2xx = 0
local pause = tonumber(os.getenv("DELAY_MS") or "0")

-- With DELAY_MS, each connection waits that long before each request: with C connections the
-- rate stays under C * 1000 / DELAY_MS requests/s (a paced, below-capacity load).
if pause > 0 then
  delay = function()
    return pause
  end
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
    '{"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f, "max_ms": %.3f, "socket_errors": %d, "non2xx": %d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000, errors, non2xx))
end
