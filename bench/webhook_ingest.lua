-- wrk script for bench/webhook_ingest.py: POSTs pre-signed webhook deliveries, one after another.
--
-- wrk -t THREADS -s webhook_ingest.lua URL -- DELIVERIES_FILE THREADS [LIMIT]
--
-- DELIVERIES_FILE has one delivery per line: "<X-Webhook-Signature value>\t<JSON body>". Each wrk
-- thread takes every THREADS-th line, so no two threads send the same delivery (a thread cannot
-- see how many threads there are, hence the argument). LIMIT keeps only the first LIMIT lines,
-- to replay deliveries already sent: the duplicate path.
-- A thread that runs out of lines starts again from its first (those are duplicates; the Python
-- side counts them from the totals). done() prints one machine-readable line.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, thread_total, limit = args[1], tonumber(args[2]), tonumber(args[3] or "0")
  signatures, bodies = {}, {}
  local index = 0
  for line in io.lines(path) do
    if limit > 0 and index >= limit then break end
    if index % thread_total == id then
      local tab = line:find("\t", 1, true)
      signatures[#signatures + 1] = line:sub(1, tab - 1)
      bodies[#bodies + 1] = line:sub(tab + 1)
    end
    index = index + 1
  end
  cursor = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  cursor = cursor % #bodies + 1
  wrk.headers["X-Webhook-Signature"] = signatures[cursor]
  return wrk.format(nil, nil, nil, bodies[cursor])
end

function done(summary, latency, requests)
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non_2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
