"""What the standalone fault drivers (tests/chaos/chaos.py,
tests/failover/failover.py) share: the repository root, demo card numbers,
free loopback ports, and load threads that run until told to stop."""
import os
import socket
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def card(i):
    """Card number of demo account i (txctl seed)."""
    return "6219 8619 %04d 8640" % i


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoadThreads:
    """threads daemon threads, each running self.run(seed + i) until
    self.stop is set; subclasses write run() and keep their tallies under
    self.lock."""

    def __init__(self, threads, seed, join_timeout=30):
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.join_timeout = join_timeout
        self.threads = [threading.Thread(target=self.run, args=(seed + i,), daemon=True)
                        for i in range(threads)]

    def run(self, seed):
        raise NotImplementedError

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(self.join_timeout)


def exactly_once(rows, accepted):
    """rows: (txid, card, amount, status, ...) from the ledger; accepted:
    txid -> (card, amount) that got a 202. Returns (problems, by_id): every
    accepted id recorded once, with the data that was sent."""
    problems = []
    by_id = {}
    for r in rows:
        by_id.setdefault(r[0], []).append(tuple(r[1:]))
    dup = [t for t, v in by_id.items() if len(v) > 1]
    if dup:
        problems.append("txids recorded more than once: %r" % dup[:10])
    missing = [t for t in accepted if t not in by_id]
    if missing:
        problems.append("%d accepted transactions not recorded, e.g. %r" % (len(missing), missing[:10]))
    wrong = [t for t, key in accepted.items() if t in by_id and by_id[t][0][:2] != tuple(key)]
    if wrong:
        problems.append("recorded with other data than accepted: %r" % wrong[:10])
    return problems, by_id
