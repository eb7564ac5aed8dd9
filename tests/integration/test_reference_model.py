"""100,000 randomized deposits, withdrawals, transfers, keyed retries and
account openings sent concurrently over HTTP, then the ledger replayed in
commit order against a small in-memory model of the rules in the design:
every recorded status, reason and balance must be the model's, and so must
the final balances. A bug that applies anything out of order, twice, half
(one side of a transfer) or by the wrong rule shows up as a row whose
outcome the model disagrees with."""
import random
import threading
import time

import requests

from conftest import (INT64_MAX, JSON, Traffic, balance_sum, card, db_exec, db_query,
                      ledger_invariant, unknown_card, wait_final, wait_until)

SEED = 20240605
REQUESTS = 100_000
ACCOUNTS = 1000
BATCHES, BATCH = 64, 1000          # deposits/withdrawals through POST /transactions
KEYED_TRANSFERS, KEYED_DEPOSITS = 1000, 500   # each sent twice with its key
CONFLICTS = 200                    # a key reused for another request
OPENINGS = 50
TRANSFERS = REQUESTS - BATCHES * BATCH - 2 * (KEYED_TRANSFERS + KEYED_DEPOSITS) - CONFLICTS \
    - OPENINGS

WHALE, RICH = card(999), card(998)   # near INT64_MAX, and its counterparty
WHALE_START, RICH_START = INT64_MAX - 3 * 10 ** 15, 2 * 10 ** 15
NORMAL = [card(i) for i in range(ACCOUNTS - 2)]
NEW = ["6219 8630 0000 %04d" % i for i in range(OPENINGS)]   # opened during the run
UNKNOWN = [unknown_card(i) for i in range(20)]
REUSED = "Idempotency-Key reused with a different request"


# --------------------------------------------------------------------------
# requests: (kind, card, card2, amount, key); kind "amount", "transfer", "open"


def big(rng):
    return rng.randint(10 ** 14, 10 ** 15)


def amount_op(rng):
    x = rng.random()
    if x < 0.02:
        c = rng.choice(UNKNOWN)
    elif x < 0.04:
        c = rng.choice(NEW)
    elif x < 0.046:
        return ("amount", WHALE, None, big(rng) * (1 if rng.random() < 0.65 else -1), None)
    else:
        c = rng.choice(NORMAL)
    if rng.random() < 0.5:
        return ("amount", c, None, rng.randint(1, 2_000_000), None)
    return ("amount", c, None, -rng.randint(1, 5_000_000), None)


def transfer_op(rng):
    x = rng.random()
    if x < 0.01:
        a = rng.choice(NORMAL + NEW)
        b = a
    elif x < 0.02:
        a, b = rng.choice(NORMAL), rng.choice(UNKNOWN)
        if rng.random() < 0.5:
            a, b = b, a
    elif x < 0.05:
        a, b = rng.choice(NEW), rng.choice(NORMAL + NEW)
        if rng.random() < 0.5:
            a, b = b, a
        if a == b:
            b = rng.choice(NORMAL)
    elif x < 0.06:
        a, b = (RICH, WHALE) if rng.random() < 0.65 else (WHALE, RICH)
        return ("transfer", a, b, big(rng), None)
    else:
        a, b = rng.sample(NORMAL, 2)
    return ("transfer", a, b, rng.randint(1, 3_000_000), None)


def http_op(req):
    kind, c, c2, amount, key = req
    headers = {"Idempotency-Key": key} if key else None
    if kind == "amount":
        return ("/transaction", {"card_number": c, "amount": amount}, headers)
    return ("/transfer", {"from": c, "to": c2, "amount": amount}, headers)


def make_workload(rng):
    """(single requests in sending order, batches of amount requests,
    opening balances). Keyed copies and conflicts go right after their
    original (sent at the same moment by another thread) or anywhere."""
    placed = [(rng.random(), transfer_op(rng)) for _ in range(TRANSFERS)]
    keyed = [transfer_op(rng) for _ in range(KEYED_TRANSFERS)] + \
        [amount_op(rng) for _ in range(KEYED_DEPOSITS)]
    originals = []
    for n, req in enumerate(keyed):
        req = req[:4] + ("ref-%d-%d" % (SEED, n),)
        originals.append(req)
        at = rng.random()
        placed.append((at, req))
        placed.append((at + 1e-9 if rng.random() < 0.5 else rng.random(), req))
    for req in rng.sample(originals, CONFLICTS):
        amount = req[3]
        other = req[:3] + (int(amount / 2) if abs(amount) > 1 else amount * 2,) + req[4:]
        at = rng.random()
        placed.append((at + 2e-9 if rng.random() < 0.5 else rng.random(), other))
    placed.sort(key=lambda p: p[0])
    singles = [req for _, req in placed]
    batches = [[amount_op(rng) for _ in range(BATCH)] for _ in range(BATCHES)]
    openings = [rng.randint(0, 3_000_000) for _ in NEW]
    assert len(singles) + BATCHES * BATCH + OPENINGS == REQUESTS
    return singles, batches, openings


# --------------------------------------------------------------------------
# the model


def fingerprint(req):
    return req[:4]


class Model:
    """The ledger's rules, applied one recorded row at a time."""

    def __init__(self, balances):
        self.bal = dict(balances)
        self.keys = {}   # key -> (first txid, fingerprint)

    def expect(self, txid, req):
        """(status, allowed reasons, balance_after, counterparty_balance_after,
        original_txid) of req recorded as txid after everything before it."""
        kind, c, c2, amount, key = req
        if key is not None:
            if key in self.keys:
                first, fp = self.keys[key]
                if fp == fingerprint(req):
                    return "duplicate", {None}, None, None, first
                return "rejected", {"idempotency_key_reused"}, None, None, first
            self.keys[key] = (txid, fingerprint(req))
        bal = self.bal
        if kind == "open":
            if c in bal:
                return "rejected", {"account_exists"}, None, None, None
            bal[c] = amount
            return "applied", {None}, amount, None, None
        if kind == "amount":
            if c not in bal:
                return "unknown_account", {None, "unknown_account"}, None, None, None
            new = bal[c] + amount
            if new < 0:
                return "insufficient_funds", {None, "insufficient_funds"}, None, None, None
            if new > INT64_MAX:
                return "rejected", {None, "overflow"}, None, None, None
            bal[c] = new
            return "applied", {None}, new, None, None
        if c == c2:
            return "rejected", {"same_account"}, None, None, None
        if c not in bal or c2 not in bal:
            return "rejected", {"unknown_account"}, None, None, None
        if bal[c] < amount:
            return "rejected", {"insufficient_funds"}, None, None, None
        if bal[c2] + amount > INT64_MAX:
            return "rejected", {"overflow"}, None, None, None
        bal[c] -= amount
        bal[c2] += amount
        return "applied", {None}, bal[c], bal[c2], None


# --------------------------------------------------------------------------
# sending


def post_until_accepted(session, srv, path, body, deadline):
    while time.monotonic() < deadline:
        r = session.post(srv.base + path, json=body, headers=JSON, timeout=30)
        if r.status_code != 503:
            return r
        time.sleep(0.02)
    raise AssertionError("%s still refused with 503 at the deadline" % path)


def paced(traffic, total, steps, send, deadline, errors):
    """Calls send(session, j) for j in 0..steps-1, the j-th once the single
    requests are j/steps of the way through, so that everything
    interleaves."""
    session = requests.Session()   # one per thread: Session is not thread-safe
    try:
        for j in range(steps):
            while traffic.done < j * total // steps and time.monotonic() < deadline \
                    and any(t.is_alive() for t in traffic._threads):
                time.sleep(0.005)
            send(session, j)
    except BaseException as e:  # reported by the test
        errors.append(repr(e))
    finally:
        session.close()


def test_randomized_traffic_matches_the_reference_model(server_factory):
    srv = server_factory(accounts=ACCOUNTS, workers=2, frontends=2, start=False)
    db_exec(srv.db, "UPDATE users SET balance = ? WHERE card_number = ?", (WHALE_START, WHALE))
    db_exec(srv.db, "UPDATE users SET balance = ? WHERE card_number = ?", (RICH_START, RICH))
    start_balances = dict(db_query(srv.db, "SELECT card_number, balance FROM users"))
    assert len(start_balances) == ACCOUNTS
    initial = balance_sum(srv.db)
    singles, batches, openings = make_workload(random.Random(SEED))
    srv.start()

    t0 = time.monotonic()
    deadline = t0 + 150
    traffic = Traffic(srv.port, [http_op(r) for r in singles], threads=8, deadline_s=150)
    batch_answers, open_answers, errors = [None] * BATCHES, [None] * OPENINGS, []

    def send_batch(session, j):
        items = [{"card_number": c, "amount": a} for _, c, _, a, _ in batches[j]]
        batch_answers[j] = post_until_accepted(session, srv, "/transactions", items, deadline)

    def send_opening(session, j):
        open_answers[j] = post_until_accepted(
            session, srv, "/accounts", {"card_number": NEW[j], "balance": openings[j]}, deadline)

    traffic.start()
    helpers = [threading.Thread(target=paced, args=(traffic, len(singles), BATCHES, send_batch,
                                                    deadline, errors)),
               threading.Thread(target=paced, args=(traffic, len(singles), OPENINGS, send_opening,
                                                    deadline, errors))]
    for t in helpers:
        t.start()
    traffic.join(timeout=160)
    for t in helpers:
        t.join(max(1.0, deadline + 10 - time.monotonic()))
    assert not errors, errors
    sent_s = time.monotonic() - t0
    assert traffic.conn_errors == 0, traffic.conn_errors

    # What the clients were told.
    accepted = {}        # txid -> request, for every id handed out for a new row
    replays, refused = [], []
    for req, (status, body, headers) in zip(singles, traffic.results):
        if status == 202 and headers.get("Idempotent-Replayed") == "true":
            assert req[4], (req, body)
            replays.append((req, int(body["id"])))
        elif status == 202:
            txid = int(body["id"])
            assert txid not in accepted, "id %d handed out twice" % txid
            accepted[txid] = req
        elif status == 422 and req[4]:
            assert body == {"status": "error", "message": REUSED}, body
            refused.append(req)
        else:
            raise AssertionError("unexpected answer %r %r to %r" % (status, body, req))
    for j, r in enumerate(batch_answers):
        assert r is not None and r.status_code == 202, (j, r and r.text)
        ids = [int(x) for x in r.json()["ids"]]
        assert len(ids) == BATCH
        for txid, req in zip(ids, batches[j]):
            assert txid not in accepted, "id %d handed out twice" % txid
            accepted[txid] = req
    opened = {}
    for j, r in enumerate(open_answers):
        req = ("open", NEW[j], None, openings[j], None)
        assert r is not None and r.status_code in (201, 202), (j, r and r.text)
        if r.status_code == 202:
            accepted[int(r.json()["id"])] = req
        else:
            # (its balance may already have moved on by the time it is read)
            assert r.json()["card_number"] == NEW[j], r.text
            opened[NEW[j]] = req

    wait_final(srv.db, accepted, timeout=120)
    rows = db_query(srv.db, """
        SELECT id, txid, kind, card_number, counterparty, amount, idempotency_key, status, reason,
               success, balance_after, counterparty_balance_after, original_txid
        FROM transactions WHERE txid IS NOT NULL ORDER BY id""")
    txids = [r[1] for r in rows]
    assert len(set(txids)) == len(txids), "a txid recorded twice"
    unexplained = set(txids) - set(accepted)
    open_rows = {r[3]: r[1] for r in rows if r[1] in unexplained and r[2] == "open"}
    assert set(open_rows) == set(opened), (sorted(set(open_rows) ^ set(opened))[:5])
    for c, txid in open_rows.items():
        accepted[txid] = opened[c]
    assert set(txids) == set(accepted), "ids accepted but not recorded, or recorded but never " \
        "handed out: %r" % sorted(set(txids) ^ set(accepted))[:10]

    # Replay in commit order.
    model = Model(start_balances)
    outcomes = {}
    mismatches = []
    for (rowid, txid, kind, c, c2, amount, key, status, reason, success, after, cp_after,
         original) in rows:
        req = accepted[txid]
        want_kind = {"transfer": "transfer", "open": "open"}.get(req[0]) or \
            ("deposit" if req[3] > 0 else "withdrawal")
        recorded = (want_kind, req[1], req[2], req[3], req[4])
        if (kind, c, c2, amount, key) != recorded:
            mismatches.append(("row data", txid, (kind, c, c2, amount, key), recorded))
            continue
        exp_status, reasons, exp_after, exp_cp, exp_original = model.expect(txid, req)
        got = (status, after, cp_after, original, success)
        want = (exp_status, exp_after, exp_cp, exp_original, int(exp_status == "applied"))
        if got != want or reason not in reasons:
            mismatches.append(("outcome", rowid, txid, req, got + (reason,), want + (reasons,)))
        outcomes[(want_kind, exp_status, reason)] = outcomes.get((want_kind, exp_status, reason),
                                                                 0) + 1
    assert not mismatches, "%d rows disagree with the model, first: %r" % (len(mismatches),
                                                                          mismatches[:5])

    final = dict(db_query(srv.db, "SELECT card_number, balance FROM users"))
    assert final == model.bal, [(c, final.get(c), model.bal.get(c))
                                for c in set(final) | set(model.bal)
                                if final.get(c) != model.bal.get(c)][:10]
    ledger_invariant(srv.db, initial)

    # What the frontend answered for keys matches what the ledger recorded.
    for req, txid in replays:
        first, fp = model.keys[req[4]]
        assert (txid, fp) == (first, fingerprint(req)), (req, txid, first, fp)
    for req in refused:
        first, fp = model.keys[req[4]]
        assert fp != fingerprint(req), (req, first)
    keys = dict(db_query(srv.db, "SELECT key, txid FROM idempotency_keys"))
    assert keys == {k: v[0] for k, v in model.keys.items()}

    print("%d requests in %.1fs; %d rows; outcomes %r; %d replays, %d refused keys"
          % (REQUESTS, sent_s, len(rows), sorted(outcomes.items()), len(replays), len(refused)))
    # The mix really reached every rule.
    seen = {(k, s) for (k, s, _r) in outcomes} | {(k, s, r) for (k, s, r) in outcomes}
    for want in [("deposit", "applied"), ("withdrawal", "applied"),
                 ("withdrawal", "insufficient_funds"), ("deposit", "unknown_account"),
                 ("deposit", "rejected"), ("transfer", "applied"), ("open", "applied"),
                 ("transfer", "rejected", "same_account"), ("transfer", "rejected", "unknown_account"),
                 ("transfer", "rejected", "insufficient_funds"), ("transfer", "rejected", "overflow"),
                 ("transfer", "duplicate")]:
        assert want in seen, "no %r in %r" % (want, sorted(outcomes))
    assert replays, "no keyed copy was answered from the ledger"
    reused = sum(n for (_k, _s, r), n in outcomes.items() if r == "idempotency_key_reused")
    assert len(refused) + reused > 0, "no conflicting key was refused"
    wait_until(lambda: srv.queue()["depth"] == 0, 5, "an empty queue")

    # Statements and counts of a sample of accounts agree with the ledger.
    sample = NEW + [WHALE, RICH] + random.Random(SEED + 1).sample(NORMAL, 30)
    for c in sample:
        check_statement(srv, c, rows)


def not_the_accounts(row):
    """A keyed copy recorded as a duplicate, or refused for a reused key,
    changes nothing about its accounts ("nothing else changes"): it is
    found by its id, not in statements or counts."""
    return row[7] == "duplicate" or row[8] == "idempotency_key_reused"


def check_statement(srv, c, rows):
    """GET /accounts/<c>/transactions, followed to its end, lists exactly
    the rows touching c since it was opened (but for not_the_accounts),
    newest first, each as it affected c; GET /accounts/<c> counts them the
    same way."""
    opened_at = min((r[0] for r in rows if r[2] == "open" and r[3] == c and r[7] == "applied"),
                    default=0)
    mine = [r for r in rows if c in (r[3], r[4]) and r[0] >= opened_at and not not_the_accounts(r)]
    mine.reverse()
    listed = []
    link = "/accounts/%s/transactions?limit=1000" % c.replace(" ", "%20")
    while link:
        r = srv.get(link)
        assert r.status_code == 200, (link, r.text)
        listed += r.json()["transactions"]
        link = r.json()["next"]
        assert len(listed) <= len(mine) + 1000, "statement of %s does not end" % c
    assert [str(it["id"]) for it in listed] == [str(r[1]) for r in mine], \
        "statement of %s: %d rows listed, %d expected" % (c, len(listed), len(mine))
    counts = dict.fromkeys(("deposits", "withdrawals", "transfers_in", "transfers_out",
                            "rejected"), 0)
    for it, (_rowid, _txid, kind, src, dst, amount, _key, status, reason, _success, after,
             cp_after, _original) in zip(listed, mine):
        own = src == c
        want_kind = kind if kind != "transfer" else ("transfer_out" if own else "transfer_in")
        want = (want_kind, -amount if want_kind == "transfer_out" else amount, status,
                reason, (after if own else cp_after) if status == "applied" else None,
                (dst if own else src) if kind == "transfer" else None)
        got = (it["kind"], it["amount"], it["status"], it.get("reason"), it.get("balance_after"),
               it.get("counterparty"))
        assert got == want, (c, it, want)
        if status != "applied":
            counts["rejected"] += 1
        elif kind != "open":
            counts[{"deposit": "deposits", "withdrawal": "withdrawals", "transfer_in": "transfers_in",
                    "transfer_out": "transfers_out"}[want_kind]] += 1
    counts["total"] = len(mine)
    r = srv.get("/accounts/" + c.replace(" ", "%20"))
    assert r.status_code == 200, r.text
    assert r.json()["counts"] == counts, (c, r.json(), counts)
