"""Locust load for txprocd, with the prototype's task weights (transaction 10,
metrics 2, homepage 1) plus balance and transaction-status lookups.

    locust -f locustfile.py                      # web UI on :8089, host below
    locust -f locustfile.py --headless -u 50 -r 50 -t 30s --host http://127.0.0.1:8000
    make loadtest                                # the same against a fresh server, then checks the ledger

Card numbers come from the demo data (`txctl seed`): "6219 8619 NNNN 8640".
A 503 (queue full, the server's deliberate overload answer) is not a failure:
it is counted under its own name, "POST /transaction [503 overload]".
"""
import os
import random
import time

from locust import FastHttpUser, between, events, task

ACCOUNTS = int(os.environ.get("TXP_ACCOUNTS", "10000"))


def card(i):
    return "6219 8619 %04d 8640" % (i % 10000)


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
                events.request.fire(request_type="POST", name="/transaction [503 overload]",
                                    response_time=(time.perf_counter() - started) * 1000,
                                    response_length=0, exception=None, context={})
            else:
                r.failure("unexpected %s: %s" % (r.status_code, r.text[:200]))

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
