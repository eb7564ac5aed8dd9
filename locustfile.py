"""Locust load for txprocd, with the prototype's task weights (transaction 10,
metrics 2, homepage 1) plus balance and transaction-status lookups, transfers,
requests that wait for their outcome (`Prefer: wait`), retries with the same
`Idempotency-Key`, and account statements.

    locust -f locustfile.py                      # web UI on :8089, host below
    locust -f locustfile.py --headless -u 50 -r 50 -t 30s --host http://127.0.0.1:8000
    make loadtest                                # the same against a fresh server, then checks the ledger

Card numbers come from the demo data (`txctl seed`): "6219 8619 NNNN 8640".
A 503 (queue full, the server's deliberate overload answer) is not a failure:
it is counted under its own name, "POST /transaction [503 overload]". So is a
wait that ran out before the outcome (202, "... [202 wait elapsed]").
"""
import os
import random
import time
import uuid

from locust import FastHttpUser, between, events, task

ACCOUNTS = int(os.environ.get("TXP_ACCOUNTS", "10000"))


def card(i):
    return "6219 8619 %04d 8640" % (i % 10000)


def two_cards():
    a = random.randrange(ACCOUNTS)
    b = (a + random.randrange(1, ACCOUNTS)) % ACCOUNTS if ACCOUNTS > 1 else a
    return card(a), card(b)


def count_as(name, started):
    """Records a deliberate non-final answer (503 overload, 202 after a wait)
    under its own name instead of as a failure."""
    events.request.fire(request_type="POST", name=name, response_time=(time.perf_counter() - started) * 1000,
                        response_length=0, exception=None, context={})


# A waiting request's final answer: 200 applied, 409 insufficient funds.
WAIT_FINAL = (200, 409)


class BankClient(FastHttpUser):
    host = os.environ.get("TXP_HOST", "http://127.0.0.1:8000")
    wait_time = between(0.0, 0.05)

    def on_start(self):
        self.last_id = None

    @task(10)
    def transaction(self):
        amount = random.randint(-5000, 5000) or 1
        body = {"card_number": card(random.randrange(ACCOUNTS)), "amount": amount}
        started = time.perf_counter()
        with self.client.post("/transaction", json=body, name="POST /transaction",
                              catch_response=True) as r:
            if r.status_code == 202 and r.json().get("status") == "queued":
                self.last_id = r.json()["id"]
                r.success()
            elif r.status_code == 503 and r.headers.get("Retry-After"):
                r.success()
                count_as("/transaction [503 overload]", started)
            else:
                r.failure("unexpected %s: %s" % (r.status_code, r.text[:200]))

    @task(3)
    def transfer(self):
        src, dst = two_cards()
        body = {"from": src, "to": dst, "amount": random.randint(1, 5000)}
        started = time.perf_counter()
        with self.client.post("/transfer", json=body, name="POST /transfer", catch_response=True) as r:
            if r.status_code == 202 and r.json().get("status") == "queued":
                self.last_id = r.json()["id"]
                r.success()
            elif r.status_code == 503 and r.headers.get("Retry-After"):
                r.success()
                count_as("/transfer [503 overload]", started)
            else:
                r.failure("unexpected %s: %s" % (r.status_code, r.text[:200]))

    @task(2)
    def transaction_wait(self):
        """Held by the server until the batch commits; answered with the outcome."""
        amount = random.randint(-5000, 5000) or 1
        body = {"card_number": card(random.randrange(ACCOUNTS)), "amount": amount}
        started = time.perf_counter()
        with self.client.post("/transaction", json=body, headers={"Prefer": "wait=5"},
                              name="POST /transaction (Prefer: wait)", catch_response=True) as r:
            if r.status_code in WAIT_FINAL and r.headers.get("Preference-Applied") == "wait=5":
                r.success()
            elif r.status_code == 202:
                r.success()
                count_as("/transaction (Prefer: wait) [202 wait elapsed]", started)
            elif r.status_code == 503 and r.headers.get("Retry-After"):
                r.success()
                count_as("/transaction (Prefer: wait) [503 overload]", started)
            else:
                r.failure("unexpected %s: %s" % (r.status_code, r.text[:200]))

    @task(2)
    def idempotent_retry(self):
        """A client that lost the answer and retries with the same key: the
        retry must get the first request's id and outcome, marked replayed.
        The first one waits for its outcome so that the retry finds the key
        recorded (a retry racing a still-queued original is recorded as a
        duplicate instead, which the integration tests cover)."""
        key = uuid.uuid4().hex
        body = {"card_number": card(random.randrange(ACCOUNTS)), "amount": random.randint(1, 5000)}
        headers = {"Idempotency-Key": key, "Prefer": "wait=5"}
        started = time.perf_counter()
        with self.client.post("/transaction", json=body, headers=headers,
                              name="POST /transaction (Idempotency-Key)", catch_response=True) as r:
            if r.status_code == 503 and r.headers.get("Retry-After"):
                r.success()
                count_as("/transaction (Idempotency-Key) [503 overload]", started)
                return
            if r.status_code == 202:
                r.success()  # not committed within the wait: nothing to compare a retry with
                count_as("/transaction (Idempotency-Key) [202 wait elapsed]", started)
                return
            if r.status_code not in WAIT_FINAL:
                r.failure("unexpected %s: %s" % (r.status_code, r.text[:200]))
                return
            first = (r.status_code, r.json().get("id"))
            r.success()
        with self.client.post("/transaction", json=body, headers=headers,
                              name="POST /transaction (Idempotency-Key retry)", catch_response=True) as r:
            if r.status_code == 503 and r.headers.get("Retry-After"):
                r.success()
            elif (r.status_code, r.json().get("id")) == first and r.headers.get("Idempotent-Replayed") == "true":
                r.success()
            else:
                r.failure("retry answered %s %s (first: %s), Idempotent-Replayed: %s" % (
                    r.status_code, r.text[:200], first, r.headers.get("Idempotent-Replayed")))

    @task(1)
    def statement(self):
        path = "/accounts/%s/transactions" % card(random.randrange(ACCOUNTS)).replace(" ", "%20")
        with self.client.get(path, params={"limit": 10}, name="GET /accounts/<card>/transactions",
                             catch_response=True) as r:
            if r.status_code == 200 and isinstance(r.json().get("transactions"), list):
                r.success()
            else:
                r.failure("bad statement: %s" % r.status_code)

    @task(2)
    def metrics(self):
        with self.client.get("/metrics", name="GET /metrics", catch_response=True) as r:
            if r.status_code == 200 and "transaction_counts" in r.json():
                r.success()
            else:
                r.failure("bad /metrics: %s" % r.status_code)

    @task(1)
    def homepage(self):
        with self.client.get("/", name="GET /", catch_response=True) as r:
            if r.status_code == 200 and "text/html" in r.headers.get("Content-Type", ""):
                r.success()
            else:
                r.failure("bad dashboard: %s" % r.status_code)

    @task(3)
    def balance(self):
        with self.client.get("/balance", params={"card_number": card(random.randrange(ACCOUNTS))},
                             name="GET /balance", catch_response=True) as r:
            if r.status_code == 200 and isinstance(r.json().get("balance"), int):
                r.success()
            else:
                r.failure("bad /balance: %s" % r.status_code)

    @task(1)
    def status(self):
        if self.last_id is None:
            return
        with self.client.get("/transaction/%s" % self.last_id, name="GET /transaction/<id>",
                             catch_response=True) as r:
            if r.status_code == 200 and r.json().get("status"):
                r.success()
            else:
                r.failure("bad status lookup: %s" % r.status_code)
