-- wrk script: POST random valid transactions against the demo accounts
-- (card numbers 6219 8619 0000 8640 .. 6219 8619 9999 8640, amounts +-5000).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local accounts = tonumber(os.getenv("BENCH_ACCOUNTS") or "10000")

request = function()
    local card = string.format("6219 8619 %04d 8640", math.random(0, math.min(accounts, 10000) - 1))
    local amount = math.random(-5000, 5000)
    if amount == 0 then amount = 1 end
    local body = string.format('{"card_number": "%s", "amount": %d}', card, amount)
    return wrk.format(nil, "/transaction", nil, body)
end
