-- wrk script of `make bench`: POSTs random valid transactions.
--
--   BENCH_ACCOUNTS  cards are drawn uniformly from the first N demo accounts
--                   of `txctl seed` (default 10000)
--   BENCH_BATCH     0 (default): one object per request to /transaction;
--                   N > 0: arrays of N objects to /transactions
--   BENCH_POOL      requests built per thread before the run and sent round
--                   robin (default 4096), so that wrk's own CPU goes into
--                   sending, not into Lua string formatting, on a machine
--                   where wrk and the server share the cores
--   BENCH_WAIT      N > 0: every request carries `Prefer: wait=N`, so the
--                   server holds it until its batch is committed and answers
--                   with the outcome (200, or 409 insufficient funds); 0
--                   (default): no header, plain 202s
--
-- Amounts are uniform in [-5000, 5000] without 0. At the end, done() prints
-- one line "BENCH_RESULT {json}" with the counts and latency percentiles
-- (microseconds) that tools/bench/bench.py reads.

local accounts = tonumber(os.getenv("BENCH_ACCOUNTS") or "10000")
local batch = tonumber(os.getenv("BENCH_BATCH") or "0")
local pool_size = tonumber(os.getenv("BENCH_POOL") or "4096")
local wait = tonumber(os.getenv("BENCH_WAIT") or "0")

local threads = {}

function setup(thread)
    thread:set("id", #threads + 1)
    table.insert(threads, thread)
end

local function card(i)
    if i < 10000 then
        return string.format("6219 8619 %04d 8640", i)
    end
    return string.format("6220 %04d %04d 8640", math.floor(i / 10000) % 10000, i % 10000)
end

local function transaction()
    local amount = math.random(-5000, 5000)
    if amount == 0 then amount = 1 end
    return string.format('{"card_number": "%s", "amount": %d}',
                         card(math.random(0, accounts - 1)), amount)
end

local pool = {}
local next_index = 0

function init(args)
    math.randomseed(id * 7919 + os.time())
    local headers = { ["Content-Type"] = "application/json" }
    if wait > 0 then headers["Prefer"] = "wait=" .. wait end
    for i = 1, pool_size do
        if batch > 0 then
            local items = {}
            for k = 1, batch do items[k] = transaction() end
            pool[i] = wrk.format("POST", "/transactions", headers, "[" .. table.concat(items, ",") .. "]")
        else
            pool[i] = wrk.format("POST", "/transaction", headers, transaction())
        end
    end
end

function request()
    next_index = next_index % pool_size + 1
    return pool[next_index]
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
        '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
        '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max, latency.mean))
end
