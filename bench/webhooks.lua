-- wrk script for the webhook benchmarks: posts each pre-signed delivery of a file exactly once, in order,
-- over all connections of one thread (run with -t1), then stops.
--
--   wrk -t1 -c8 -d120s -s bench/webhooks.lua http://127.0.0.1:PORT/path -- deliveries.txt [done-marker]
--
-- The file holds, per delivery: the Stripe-Signature line, the body's length in bytes, the body, a newline.
-- Once every delivery has been sent, free connections send GET /bench/hello (fillers, not counted in `answered`)
-- until the last delivery is answered; then the script sends wrk a SIGINT, which ends the run at once (wrk's own -d
-- is only a cap). Connections cannot just idle: a gunicorn sync worker would sit on an open, silent connection.
-- The few fillers (`fillers`, a tail of some tens) are in wrk's latency histogram: being fast, they move the
-- reported p50 down by fillers/2 ranks and leave p99 all but unchanged. done() prints one JSON line for run.py.

local requests = {}
local sent = 0
total = 0
local filler = nil
local pid = nil
local verified = false
local marker = nil
answered, statuses_2xx, duplicates, processed, queued, fillers = 0, 0, 0, 0, 0, 0

function init(args)
  marker = args[2]
  local f = assert(io.open(args[1], "rb"))
  while true do
    local signature = f:read("*l")
    if not signature or signature == "" then break end
    local length = tonumber(f:read("*l"))
    local body = f:read(length)
    f:read("*l")
    total = total + 1
    local headers = {["Content-Type"] = "application/json", ["Stripe-Signature"] = signature}
    for name, value in pairs(wrk.headers) do  -- those of -H too (X-Forwarded-Proto from the bench's proxy role)
      if headers[name] == nil then headers[name] = value end
    end
    requests[total] = wrk.format("POST", nil, headers, body)
  end
  f:close()
  filler = wrk.format("GET", "/bench/hello")
  local stat = assert(io.open("/proc/self/stat", "r"))
  pid = stat:read("*n")
  stat:close()
end

function request()
  if not verified then  -- wrk calls request() once before the run to check it (script_verify_request)
    verified = true
    return filler
  end
  sent = sent + 1
  if sent > total then
    return filler
  end
  return requests[sent]
end

function response(status, headers, body)
  if body == "hello" then
    fillers = fillers + 1
    return
  end
  answered = answered + 1
  if status >= 200 and status < 300 then statuses_2xx = statuses_2xx + 1 end
  if body:find('"duplicate"', 1, true) then
    duplicates = duplicates + 1
  elseif body:find('"queued"', 1, true) then  -- recorded, to be applied by the queue worker (WEBHOOK_APPLY=queue)
    queued = queued + 1
  elseif body:find('"processed"', 1, true) or body:find('"ignored"', 1, true) or body:find('"recorded"', 1, true) then
    processed = processed + 1  -- applied in the request (WEBHOOK_APPLY=request), or the floor's insert
  end
  if answered == total then
    -- The driver watches for this file and interrupts wrk too (a signal from here has been seen to get lost).
    if marker then assert(io.open(marker, "w")):close() end
    -- popen, not os.execute: system() ignores SIGINT in its caller until the command has finished.
    io.popen("kill -INT " .. pid)
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests_stats)
  local t = threads[1]
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors_status": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f, "answered": %d, "ok": %d, "duplicates": %d, "processed": %d, "queued": %d, "total": %d, ' ..
    '"fillers": %d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, t:get("answered"), t:get("statuses_2xx"),
    t:get("duplicates"), t:get("processed"), t:get("queued"), t:get("total"), t:get("fillers")))
end
