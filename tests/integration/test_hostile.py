"""Hostile input against the live server over raw sockets: garbage, truncated
and oversized requests, ambiguous framing, slow clients, pipelining, and JSON
built to break parsers. Every case must end in a clear refusal (a JSON 4xx
from our handlers, or where libevent answers by itself a 4xx or a closed
connection), leave the ledger and the queue untouched, crash no process, and
leave the server serving the next client.

The module's server runs with --http-timeout 2 and --header-timeout 3 so that
requests which never complete are refused (408) within seconds."""
import contextlib
import json
import select
import socket
import time

import pytest
import requests

from conftest import HTTP_TIMEOUT, Server, card, db_exec, wait_until

# The ledger backend plays no part here: once, on SQLite.
pytestmark = pytest.mark.backend_independent

HTTP_IDLE_TIMEOUT = 2      # the module server's --http-timeout (bodies, writes)
HEADER_TIMEOUT = 3         # its --header-timeout
CLOSE_MARGIN = 5           # slack on top of it for a loaded machine
JSON_CT = b"application/json"


# --------------------------------------------------------------------------
# raw HTTP


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers      # lower-cased names
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %r %r>" % (self.status, self.headers, self.body[:200])


class Raw:
    """One TCP connection carrying bytes no HTTP library would send."""

    def __init__(self, srv, timeout=HTTP_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        """Sends what the server lets through; a server that closes early
        (allowed for refused input) is not an error."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _fill(self, deadline):
        """Reads more into buf; False at EOF or when the deadline passes."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def response(self, timeout=HTTP_TIMEOUT):
        """The next response, or None if the connection ends (or the time
        runs out) without one."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n and self._fill(deadline):
                pass
            body, self.buf = self.buf[:n], self.buf[n:]
        else:   # delimited by the close
            while self._fill(deadline):
                pass
            body, self.buf = self.buf, b""
        return Response(status, headers, body)

    def closed_within(self, seconds):
        """True once the server has closed the connection (anything it
        sends first is kept in buf)."""
        deadline = time.monotonic() + seconds
        while self._fill(deadline):
            pass
        return self.eof


def post_bytes(body, content_type=JSON_CT, extra=b"", path=b"/transaction"):
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\n%s\r\n" % (path, content_type, len(body), extra) + body)


def tx_body(card_number, amount_text):
    """A body with the amount spelled exactly as given."""
    return b'{"card_number": %s, "amount": %s}' % (json.dumps(card_number).encode(),
                                                   amount_text.encode())


def chunked(body, sizes):
    """body split into chunks of the given sizes (the rest in one more)."""
    out, pos = b"", 0
    for n in list(sizes) + [len(body)]:
        piece = body[pos:pos + n]
        pos += len(piece)
        if piece:
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


def assert_json_error(resp, status, field=None):
    assert resp is not None, "connection closed without an answer"
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").startswith("application/json"), resp
    body = resp.json()
    assert body["status"] == "error" and body["message"], body
    if field:
        assert field in body["message"], body
    return body


def assert_refused_by_http_layer(conn, resp, statuses, answer_required=True):
    """The HTTP layer's own answer: a JSON 4xx, then the connection closed;
    where it has nothing to answer, just the close."""
    if answer_required:
        assert resp is not None, "connection closed without an answer"
    if resp is not None:
        assert resp.status in statuses, resp
        assert_json_error(resp, resp.status)
    assert conn.closed_within(HTTP_IDLE_TIMEOUT + CLOSE_MARGIN), "connection left open"


# --------------------------------------------------------------------------
# the server and the checks around every case


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("hostile"), args=["--http-timeout", HTTP_IDLE_TIMEOUT,
                                                         "--header-timeout", HEADER_TIMEOUT])
    try:
        s.start()
        yield s
        s.stop_and_check()
    finally:
        s.cleanup()


def ledger_rows(srv):
    return srv.query("SELECT COUNT(*) FROM transactions")[0][0]


def settle(srv):
    """Waits until nothing is queued or claimed, so the ledger is still."""
    def drained():
        q = srv.queue()
        return q["depth"] == 0 and q["claimed"] == 0
    wait_until(drained, 15, "the queue to drain")


def child_lives(srv):
    return {c["slot"]: (c["pid"], c["restarts"]) for c in srv.children()}


def assert_serves_next_client(srv):
    """A new client gets /healthz and has a valid POST accepted and applied."""
    r = requests.get(srv.base + "/healthz", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    r = requests.post(srv.base + "/transaction", json={"card_number": card(1), "amount": 1},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 202, r.text
    txid = int(r.json()["id"])
    assert srv.wait_final([txid], timeout=15)[txid] == "applied"


@contextlib.contextmanager
def leaves_no_trace(srv, accepted=0):
    """Around refused requests (and `accepted` valid ones the test makes
    itself): nothing else queued or recorded, no process died (a crashed
    frontend is restarted and would otherwise go unnoticed), and the next
    client is served."""
    settle(srv)
    rows, next_txid, lives = ledger_rows(srv), srv.queue()["next_txid"], child_lives(srv)
    yield
    settle(srv)
    assert srv.queue()["next_txid"] == next_txid + accepted, \
        "a refused request took a transaction id"
    assert ledger_rows(srv) == rows + accepted, "a refused request reached the ledger"
    assert child_lives(srv) == lives, "a process died and was restarted"
    assert_serves_next_client(srv)


def refused_with(srv, request, status, field=None):
    """Sends request on its own connection inside leaves_no_trace and checks
    for a JSON error; returns its body."""
    with leaves_no_trace(srv), Raw(srv) as conn:
        conn.send(request)
        return assert_json_error(conn.response(), status, field)


# --------------------------------------------------------------------------
# garbage and broken requests


GARBAGE = {
    "binary_noise": bytes(range(256)) * 4 + b"\r\n\r\n",
    "words": b"HELLO THERE\r\n\r\n",
    "missing_path": b"GET\r\n\r\n",
    "unknown_version": b"GET /healthz HTTP/9.9\r\n\r\n",
    "nul_in_path": b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n",
    "header_without_colon": b"GET /healthz HTTP/1.1\r\nthis is not a header\r\n\r\n",
    "negative_content_length": post_bytes(b"{}").replace(b"Content-Length: 2",
                                                         b"Content-Length: -1"),
    "non_numeric_content_length": post_bytes(b"{}").replace(b"Content-Length: 2",
                                                            b"Content-Length: 2x"),
}


@pytest.mark.parametrize("data", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_request_gets_400_and_close(hostile_server, data):
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(data)
        assert_refused_by_http_layer(conn, conn.response(), {400})


def test_tls_handshake_on_plain_port_is_dropped(hostile_server):
    # No line ending: the request line never completes, so the idle timeout ends it.
    hello = bytes.fromhex("1603010200010001fc0303") + bytes(32) + b"\x00\x02\x13\x01\x01\x00"
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(hello)
        assert_refused_by_http_layer(conn, conn.response(HTTP_IDLE_TIMEOUT + CLOSE_MARGIN),
                                     {400}, answer_required=False)


TRUNCATED = {
    "request_line_cut": b"POST /transac",
    "headers_cut": b"POST /transaction HTTP/1.1\r\nHost: x\r\nContent-Ty",
    "headers_unterminated": b"POST /transaction HTTP/1.1\r\nHost: x\r\n",
    "body_shorter_than_content_length": post_bytes(tx_body(card(2), "5"))[:-10],
}


@pytest.mark.parametrize("data", TRUNCATED.values(), ids=TRUNCATED.keys())
def test_truncated_request_then_close_records_nothing(hostile_server, data):
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(data)
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.closed_within(HTTP_IDLE_TIMEOUT + CLOSE_MARGIN)
        assert conn.buf == b"", conn.buf   # nothing to answer


# Which deadline ends each: the head's (from its first byte) or the body's.
TRUNCATED_DEADLINE = {"request_line_cut": (HEADER_TIMEOUT, "headers"),
                      "headers_cut": (HEADER_TIMEOUT, "headers"),
                      "headers_unterminated": (HEADER_TIMEOUT, "headers"),
                      "body_shorter_than_content_length": (HTTP_IDLE_TIMEOUT, "body")}


@pytest.mark.parametrize("name", TRUNCATED)
def test_truncated_request_left_idle_gets_408_at_its_deadline(hostile_server, name):
    deadline, what = TRUNCATED_DEADLINE[name]
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(TRUNCATED[name])
        start = time.monotonic()
        resp = conn.response(deadline + CLOSE_MARGIN)
        elapsed = time.monotonic() - start
        body = assert_json_error(resp, 408, what)
        assert "within %d s" % deadline in body["message"], body
        assert elapsed >= deadline - 0.5, elapsed
        assert resp.headers.get("connection") == "close", resp
        assert conn.closed_within(CLOSE_MARGIN), "connection left open after the 408"


# --------------------------------------------------------------------------
# size limits


def test_header_over_8k_gets_400_and_close(hostile_server):
    data = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(data)
        assert_refused_by_http_layer(conn, conn.response(), {400, 413, 431})


def test_many_small_headers_over_8k_get_400_and_close(hostile_server):
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(1500))
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(post_bytes(tx_body(card(2), "5"), extra=headers))
        assert_refused_by_http_layer(conn, conn.response(), {400, 413, 431})


def test_headers_just_under_8k_are_served(hostile_server):
    data = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 7000 + b"\r\n\r\n"
    with Raw(hostile_server) as conn:
        conn.send(data)
        resp = conn.response()
    assert resp is not None and resp.status == 200, resp


def test_content_length_of_1gib_is_refused_unread(hostile_server):
    data = post_bytes(b"").replace(b"Content-Length: 0", b"Content-Length: 1073741824")
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        start = time.monotonic()
        conn.send(data + tx_body(card(2), "5"))
        resp = conn.response()
        assert time.monotonic() - start < HTTP_IDLE_TIMEOUT, "waited for the body"
        assert_refused_by_http_layer(conn, resp, {413})


def test_content_length_beyond_int64_is_refused(hostile_server):
    data = post_bytes(b"").replace(b"Content-Length: 0", b"Content-Length: 99999999999999999999")
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(data)
        assert_refused_by_http_layer(conn, conn.response(), {400, 413})


# --------------------------------------------------------------------------
# chunked bodies and ambiguous framing


def test_valid_chunked_body_is_accepted_and_applied(hostile_server):
    body = tx_body(card(3), "42")
    data = (b"POST /transaction HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, [1, 7, 20]))
    with Raw(hostile_server) as conn:
        conn.send(data)
        resp = conn.response()
    assert resp is not None and resp.status == 202, resp
    txid = int(resp.json()["id"])
    assert hostile_server.wait_final([txid], timeout=15)[txid] == "applied"
    assert hostile_server.query("SELECT card_number, amount FROM transactions WHERE txid = ?",
                                (txid,)) == [(card(3), 42)]


def test_chunked_body_over_4096_bytes_is_413_json(hostile_server):
    body = json.dumps({"card_number": card(3), "amount": 1, "pad": "x" * 6000}).encode()
    data = (b"POST /transaction HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, [1000] * 6))
    refused_with(hostile_server, data, 413)


BAD_CHUNKS = {
    "size_not_hex": b"zz\r\nabc\r\n0\r\n\r\n",
    "size_huge": b"ffffffffffff\r\nabc",
    "size_negative": b"-5\r\nabcde\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("chunks", BAD_CHUNKS.values(), ids=BAD_CHUNKS.keys())
def test_malformed_chunked_body_is_refused_and_closed(hostile_server, chunks):
    # libevent reports every chunk-size error as "too long": 413, then close.
    data = (b"POST /transaction HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(data)
        assert_refused_by_http_layer(conn, conn.response(), {400, 413})


def test_chunked_with_content_length_is_refused_and_closed(hostile_server):
    body = tx_body(card(3), "5")
    data = (b"POST /transaction HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + chunked(body, []))
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(data)
        assert_refused_by_http_layer(conn, conn.response(), {400})


def test_second_content_length_cannot_smuggle_a_request(hostile_server):
    # evhttp reads the first Content-Length (0); a proxy trusting the last one
    # would see one request, evhttp alone two, the second a valid POST.
    inner = post_bytes(tx_body(card(4), "5"))
    data = (b"POST /transaction HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(inner) + inner)
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(data)
        assert_json_error(conn.response(), 400, "Content-Length")
        assert conn.closed_within(CLOSE_MARGIN), "connection kept open after a framing error"
        assert conn.buf == b"", "the smuggled request was answered: %r" % conn.buf


@pytest.mark.parametrize("encoding", [b"gzip", b"identity", b"chunked, gzip"])
def test_transfer_encoding_other_than_chunked_is_refused_and_closed(hostile_server, encoding):
    # evhttp would read no body at all and then parse the body as the next
    # request; a chunked body in a codec it does not know is no better.
    inner = post_bytes(tx_body(card(4), "5"))
    data = (b"POST /transaction HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: %s\r\n\r\n" % encoding + inner)
    with leaves_no_trace(hostile_server), Raw(hostile_server) as conn:
        conn.send(data)
        resp = conn.response()
        # libevent refuses "chunked, gzip" itself (HTML); the rest reach us.
        if resp is not None and resp.headers.get("content-type") == "text/html":
            assert_refused_by_http_layer(conn, resp, {400})
        else:
            assert_json_error(resp, 400, "Transfer-Encoding")
            assert conn.closed_within(CLOSE_MARGIN), "connection kept open after a framing error"
        assert conn.buf == b"", "the body was answered as a request: %r" % conn.buf


# --------------------------------------------------------------------------
# connections: slow clients, pipelining


def test_300_idle_connections_do_not_block_another_client(hostile_server):
    srv = hostile_server
    stalled = [
        b"",                                                   # connected, silent
        b"POST /transaction HTTP/1.1\r\nHost: x\r\n",          # headers never end
        post_bytes(tx_body(card(5), "5"))[:-5],                # body never ends
    ]
    conns = []
    try:
        with leaves_no_trace(srv, accepted=1):
            for i in range(300):
                c = socket.create_connection(("127.0.0.1", srv.port), timeout=HTTP_TIMEOUT)
                conns.append(c)
                if stalled[i % 3]:
                    c.sendall(stalled[i % 3])
            start = time.monotonic()
            r = requests.get(srv.base + "/healthz", timeout=HTTP_TIMEOUT)
            assert r.status_code == 200
            r = requests.post(srv.base + "/transaction", json={"card_number": card(5), "amount": 1},
                              timeout=HTTP_TIMEOUT)
            assert r.status_code == 202, r.text
            # Served while the stalled connections are all still open: not
            # after the server dropped them (no wall-clock bound to trip on
            # a loaded machine).
            ready, _, _ = select.select(conns, [], [], 0)
            assert not ready, "%d stalled connections were dropped before the other client was " \
                "served (%.2fs)" % (len(ready), time.monotonic() - start)
            # The server ends every stalled connection at its deadline: a
            # silent one without an answer, a started request with a 408.
            waiting = {c: i % 3 for i, c in enumerate(conns)}
            got = {c: b"" for c in conns}
            limit = max(HEADER_TIMEOUT, HTTP_IDLE_TIMEOUT) + CLOSE_MARGIN
            deadline = time.monotonic() + limit
            while waiting and time.monotonic() < deadline:
                readable, _, _ = select.select(list(waiting), [], [], 0.2)
                for c in readable:
                    try:
                        data = c.recv(4096)
                    except ConnectionResetError:
                        data = b""
                    got[c] += data
                    if data:
                        continue
                    kind = waiting.pop(c)
                    if kind == 0:
                        assert got[c] == b"", "a silent connection was answered: %r" % got[c]
                    else:
                        assert got[c].startswith(b"HTTP/1.1 408 ") and b'"status":"error"' in got[c], \
                            got[c][:300]
            assert not waiting, "%d of 300 idle connections still open after %ds" % (
                len(waiting), limit)
    finally:
        for c in conns:
            c.close()


def test_trickling_client_does_not_block_others(hostile_server):
    """A client sending its header lines slowly, but within --header-timeout,
    costs one connection and is served; it must not delay others."""
    srv = hostile_server
    with Raw(srv) as slow:
        slow.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for i in range(4):
            time.sleep(HEADER_TIMEOUT / 8)
            slow.send(b"X-Drip-%d: y\r\n" % i)
            r = requests.get(srv.base + "/healthz", timeout=HTTP_TIMEOUT)
            assert r.status_code == 200
        slow.send(b"\r\n")
        resp = slow.response()
    assert resp is not None and resp.status == 200, resp


def test_pipelined_posts_are_answered_in_order(hostile_server):
    srv = hostile_server
    amounts = [11, 12, 13, 14, 15]
    data = b"".join(post_bytes(tx_body(card(6), str(a))) for a in amounts)
    data += post_bytes(b"not json") + post_bytes(tx_body(card(6), "16"))
    with Raw(srv) as conn:
        conn.send(data)
        responses = [conn.response() for _ in range(7)]
    assert all(r is not None for r in responses), responses
    assert [r.status for r in responses] == [202] * 5 + [400, 202], responses
    assert_json_error(responses[5], 400)
    ids = [int(r.json()["id"]) for r in responses if r.status == 202]
    assert ids == sorted(ids) and len(set(ids)) == 6, ids
    for r, txid in zip([r for r in responses if r.status == 202], ids):
        assert r.headers["location"] == "/transaction/%d" % txid
    rows = srv.wait_final(ids, timeout=15)
    assert all(rows[t] == "applied" for t in ids)
    recorded = dict(srv.query("SELECT txid, amount FROM transactions WHERE txid IN (%s)"
                              % ",".join("?" * len(ids)), ids))
    assert [recorded[t] for t in ids] == amounts + [16]


# --------------------------------------------------------------------------
# JSON built to break parsers


def nested(depth, open_=b"[", close=b"]"):
    return open_ * depth + close * depth


NESTING = {
    # (body, status): past 4096 bytes the size limit answers first.
    "arrays_10000_deep_bare": (nested(10000), 413),
    "arrays_2000_deep_bare": (nested(2000), 400),
    "arrays_1500_deep_in_member": (b'{"card_number": "1", "amount": 1, "x": ' + nested(1500) + b"}",
                                   400),
    "objects_and_arrays_1100_deep": (b'{"":[' * 550 + b"1" + b"]}" * 550, 400),
    "unclosed_3000_deep": (b"[" * 3000, 400),
}


@pytest.mark.parametrize("body,status", NESTING.values(), ids=NESTING.keys())
def test_deeply_nested_json_is_refused_without_crash(hostile_server, body, status):
    refused_with(hostile_server, post_bytes(body), status)


DUPLICATES = {
    "amount_twice": (b'{"card_number": "6219 8619 0001 8640", "amount": 1, "amount": -99}', "amount"),
    "card_twice": (b'{"card_number": "1", "card_number": "6219 8619 0001 8640", "amount": 1}',
                   "card_number"),
    "amount_twice_escaped": (b'{"card_number": "6219 8619 0001 8640", "amount": 1, '
                             b'"amou\\u006et": 5}', "amount"),
}


@pytest.mark.parametrize("body,field", DUPLICATES.values(), ids=DUPLICATES.keys())
def test_duplicate_keys_are_400(hostile_server, body, field):
    refused_with(hostile_server, post_bytes(body), 400, field)


ENCODING = {
    "raw_nul_in_card": (b'{"card_number": "6219\x008619", "amount": 5}', None),
    "raw_nul_after_body": (tx_body(card(7), "5") + b"\x00", None),
    "escaped_nul_in_card": (b'{"card_number": "6219\\u00008619", "amount": 5}', "card_number"),
    "escaped_nul_in_name": (b'{"card_number": "6219 8619 0007 8640", "amount\\u0000x": 5}',
                            "field names"),
    "invalid_utf8_in_card": (b'{"card_number": "6219 \xff\xfe", "amount": 5}', "UTF-8"),
    "invalid_utf8_in_ignored_member": (b'{"card_number": "6219 8619 0007 8640", "amount": 5, '
                                       b'"memo": "\xc3\x28"}', "UTF-8"),
    "invalid_utf8_in_name": (b'{"card_number": "6219 8619 0007 8640", "amount": 5, "\xff": 1}',
                             "UTF-8"),
    "overlong_utf8": (b'{"card_number": "6219 8619 0007 8640", "amount": 5, "m": "\xc0\xaf"}',
                      "UTF-8"),
    "utf8_surrogate": (b'{"card_number": "6219 8619 0007 8640", "amount": 5, "m": "\xed\xa0\x80"}',
                       "UTF-8"),
    "lone_surrogate_escape": (b'{"card_number": "6219 8619 0007 8640", "amount": 5, "m": "\\ud800"}',
                              None),
    "fullwidth_digits_in_card": ('{"card_number": "\uff16\uff12\uff11\uff19", "amount": 5}'.encode(),
                                 "card_number"),
    "byte_order_mark": (b"\xef\xbb\xbf" + tx_body(card(7), "5"), None),
}


@pytest.mark.parametrize("body,field", ENCODING.values(), ids=ENCODING.keys())
def test_nul_bytes_and_bad_encodings_are_400(hostile_server, body, field):
    refused_with(hostile_server, post_bytes(body), 400, field)


SQL_CARDS = ["1; DROP TABLE users", "' OR 1=1 --", "6219 8619 0001 8640' --",
             "6219 8619 0001 8640; DELETE FROM transactions", "1 UNION SELECT balance FROM users"]


@pytest.mark.parametrize("card_number", SQL_CARDS)
def test_sql_looking_card_number_is_400(hostile_server, card_number):
    schema = "SELECT type, name FROM sqlite_master ORDER BY name"
    tables, users = hostile_server.query(schema), hostile_server.query("SELECT COUNT(*) FROM users")
    refused_with(hostile_server, post_bytes(json.dumps({"card_number": card_number,
                                                        "amount": 5}).encode()),
                 400, "card_number")
    r = requests.get(hostile_server.base + "/balance", params={"card_number": card_number},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 400, r.text
    assert r.json()["status"] == "error"
    assert hostile_server.query(schema) == tables
    assert hostile_server.query("SELECT COUNT(*) FROM users") == users


INT64_EDGES = ["9223372036854775807", "-9223372036854775808", "9223372036854775808",
               "-9223372036854775809", "18446744073709551616", "1e19", "-1e19", "1e15",
               "9.223372036854775807e18", "1000000000000001"]


@pytest.mark.parametrize("amount", INT64_EDGES)
def test_amount_at_and_beyond_int64_limits_is_400(hostile_server, amount):
    refused_with(hostile_server, post_bytes(tx_body(card(8), amount)), 400, "amount")


def batch_element(n):
    return json.dumps({"card_number": card(n), "amount": 1}).encode()


BATCHES = {
    "arrays_250000_deep": (b"[" * 250000, 400),
    "nested_5000_deep_in_element": (b'[{"card_number": "1", "amount": 1, "x": ' + nested(5000) + b"}]",
                                    400),
    "1001_elements": (b"[" + b",".join([batch_element(1)] * 1001) + b"]", 413),
    "60000_empty_objects": (b"[" + b",".join([b"{}"] * 60000) + b"]", 413),
    "body_over_256k": (b'[{"card_number": "1", "amount": 1, "pad": "' + b"x" * 300000 + b'"}]', 413),
    "element_over_4096_bytes": (b'[{"card_number": "1", "amount": 1, '
                                + b",".join(b'"k%d": 0' % i for i in range(1000)) + b"}]", 413),
    "duplicate_key_in_second_element": (b"[" + batch_element(1) + b', {"card_number": "1", '
                                        b'"amount": 1, "amount": 2}]', 400),
    "invalid_utf8_in_second_element": (b"[" + batch_element(1) + b', {"card_number": "1", '
                                       b'"amount": 1, "m": "\xff"}]', 400),
    "escaped_nul_in_name": (b'[{"card_number": "1", "amount\\u0000": 1}]', 400),
}


@pytest.mark.parametrize("body,status", BATCHES.values(), ids=BATCHES.keys())
def test_hostile_batch_body_is_refused_whole(hostile_server, body, status):
    """POST /transactions refuses the whole batch: no element is queued."""
    refused_with(hostile_server, post_bytes(body, path=b"/transactions"), status)


def test_deposit_overflowing_int64_is_rejected_and_balance_kept(server_factory):
    """One balance a little under INT64_MAX; the other accounts keep their
    seeded balances, so the ledger's total no longer fits in int64, which
    nothing on the way (start-up, metrics, history) may trip over."""
    srv = server_factory(start=False)
    rich, other = card(9), card(10)
    near_max = 2 ** 63 - 10
    db_exec(srv.db, "UPDATE users SET balance = ? WHERE card_number = ?", (near_max, rich))
    srv.start()
    other_before = srv.query("SELECT balance FROM users WHERE card_number = ?", (other,))[0][0]

    # One at a time: the outcome of each depends on the ones before.
    outcomes = []
    for card_number, amount in [(rich, 11), (rich, 9), (rich, 1), (other, 100)]:
        txid = srv.submit(card_number, amount)
        outcomes.append((txid, srv.wait_final([txid], timeout=15)[txid]))
    assert [status for _, status in outcomes] == ["rejected", "applied", "rejected", "applied"]
    over, beyond = outcomes[0][0], outcomes[2][0]
    # +9 lands exactly on INT64_MAX; +11 and then +1 would pass it.
    assert srv.query("SELECT balance FROM users WHERE card_number = ?", (rich,)) == [(2 ** 63 - 1,)]
    assert srv.query("SELECT balance FROM users WHERE card_number = ?", (other,)) == \
        [(other_before + 100,)]
    assert srv.query("SELECT success FROM transactions WHERE txid IN (?, ?)",
                     (over, beyond)) == [(0,), (0,)]
    r = srv.get("/balance", params={"card_number": rich})
    assert r.status_code == 200 and r.json()["balance"] == 2 ** 63 - 1, r.text
    assert srv.transaction(over).json()["status"] == "rejected"
    m = srv.metrics()
    assert m["counters"]["tx_rejected"] == 2
    assert isinstance(m["average_balance_history"], list)
    # The account still works in the other direction.
    back = srv.submit(rich, -(10 ** 15))
    assert srv.wait_final([back], timeout=15)[back] == "applied"
