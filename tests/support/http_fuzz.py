"""A raw-socket HTTP fuzzer: seeded, bounded, many connections at once.

Each case is bytes sent on a fresh connection plus a client behaviour (read the answer,
close early, reset, send in pieces). ``run_fuzz`` returns the status codes it saw so a test
can assert the appliance never answered a 5xx other than 503.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

EID = "{fp:7}:0d4c1d0e-52c9-4b7e-8d0a-2f6d3c1f9a11"
PATHS = [
    "/v1/executions", "/healthz", "/v1/executions?partition=0&limit=5",
    "/v1/executions?partition=-1", "/v1/executions?partition=99999999999999999999",
    f"/v1/executions/{EID}", f"/v1/executions/{EID}/state", f"/v1/executions/{EID}/result",
    f"/v1/executions/{EID}/complete", f"/v1/executions/{EID}/cancel",
    f"/v1/executions/{EID}/priority", f"/v1/executions/{EID}/renew",
    "/v1/workers/w1/claim-task", "/v1/workers/%00/claim-task", "/v1/workers/%F0%9F%92%A9/claim-task",
    "//v1//executions", "/v1/executions/", "/v1/../healthz", "/%2e%2e/%2e%2e/etc/passwd",
    "/v1/executions/%7Bfp:1%7D:x/complete", "/v1/executions/\xe2\x80\xae/state", "*",
    "/" + "a" * 9000, "/v1/executions?" + "x=1&" * 500, "http://evil/healthz", "/nope",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT",
           "PRI", "G\x00T", "get", "POST " * 3, ""]
JSON_BODIES = [
    b'{"execution_kind":"fuzz"}', b"{}", b"[]", b"null", b"1", b'"x"', b"{", b'{"a":}',
    b'{"priority":NaN}', b'{"priority":Infinity}', b'{"priority":1e999}',
    b'{"priority":' + b"9" * 400 + b"}", b'{"priority":-0.0}',
    b'{"policy":{"retry_policy":{"backoff":{"multiplier":1e308}}}}',
    b'{"tags":{"a.b":"\\ud800"}}', b'{"execution_kind":"\\u0000"}', b"[" * 5000 + b"]" * 5000,
    b'{"lane_id":"' + "é".encode() * 300 + b'"}', b'\xff\xfe{"a":1}', b"\x00" * 64,
    b'{"handle":"' + b"A" * 5000 + b'"}', b'{"wait_ms":-1,"lane_id":"default"}',
    b'{"lane_id":"default","wait_ms":50,"worker_instance_id":"w"}',
]
TLS_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00\x00\x02\x00\x2f"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">I", 0)[1:] + b"\x04\x00" + \
    b"\x00\x00\x00\x00"
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


@dataclass
class FuzzReport:
    statuses: Counter[int] = field(default_factory=Counter)
    bad: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (status, sent, got)
    connect_errors: int = 0
    cases: int = 0

    def server_errors(self) -> list[tuple[int, bytes, bytes]]:
        return [b for b in self.bad if b[0] >= 500 and b[0] != 503]


def _headers(r: random.Random, body: bytes) -> tuple[list[bytes], bytes]:
    headers = [b"Host: fuzz"]
    if r.random() < 0.7:
        headers.append(r.choice([b"Content-Type: application/json",
                                 b"Content-Type: text/plain", b"Content-Type: ",
                                 b"Content-Type: application/json; charset=latin-1",
                                 b"content-type: APPLICATION/JSON"]))
    framing = r.randrange(12)
    if framing == 0:
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == 1:
        headers.append(b"Transfer-Encoding: chunked")
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    elif framing == 2:
        headers.append(b"Transfer-Encoding: chunked")
        body = r.choice([b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX", b"2\r\n{}\r\nXYZ\r\n",
                         b"2\r\n{}\r\n0\r\nbad trailer\r\n\r\n", b"-1\r\n",
                         b"ffffffffffffffffffff\r\n", b"2;ext=\x00\r\n{}\r\n0\r\n\r\n"])
    elif framing == 3:
        headers += [b"Content-Length: 10", b"Transfer-Encoding: chunked"]
        body = b"0\r\n\r\n"
    elif framing == 4:
        headers.append(r.choice([b"Content-Length: -5", b"Content-Length: abc",
                                 b"Content-Length: 99999999999999999999999",
                                 b"Content-Length: 1, 2", b"Content-Length:  3 "]))
    elif framing == 5:
        headers.append(b"Content-Length: %d" % (len(body) + r.randrange(1, 50)))
    elif framing == 6:
        headers += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % len(body)]
    elif framing == 7:
        headers.append(b"Transfer-Encoding: gzip, chunked")
    elif framing == 8:
        headers.append(b"Content-Length: 2000000")
        body = body[:100]
    extra = r.randrange(10)
    if extra == 0:
        headers.append(b"Bad Header: x")
    elif extra == 1:
        headers.append(b"X-Long: " + b"a" * r.choice([100, 70_000]))
    elif extra == 2:
        headers.append(b" folded: continuation")
    elif extra == 3:
        headers.append(b"Authorization: " + r.choice([b"Bearer", b"bearer x", b"Basic \xff"]))
    elif extra == 4:
        headers.append(b"Expect: 100-continue")
    elif extra == 5:
        headers.append(b"Upgrade: h2c")
        headers.append(b"Connection: Upgrade, HTTP2-Settings")
        headers.append(b"HTTP2-Settings: AAMAAABkAAQAAP__")
    elif extra == 6:
        headers.append(b"Origin: http://evil")
    elif extra == 7:
        headers.append(b"X-\xff\xfe: \x80")
    if r.random() < 0.5:
        headers.append(b"Connection: close")
    return headers, body


def make_case(r: random.Random) -> bytes:
    """One request (or not quite one) as raw bytes."""
    roll = r.random()
    if roll < 0.03:
        return TLS_HELLO
    if roll < 0.06:
        return H2_PREFACE
    if roll < 0.09:
        return bytes(r.randrange(256) for _ in range(r.randrange(1, 300)))
    method = r.choice(METHODS).encode("latin-1", "replace")
    path = r.choice(PATHS).encode("utf-8", "surrogateescape")
    version = r.choice([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9.9", b""])
    body = r.choice(JSON_BODIES) if r.random() < 0.8 else b""
    headers, body = _headers(r, body)
    data = method + b" " + path + b" " + version + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
    data += body
    if r.random() < 0.1:
        data += data  # pipelined twice
    return data


def _one(port: int, data: bytes, r: random.Random, report: FuzzReport,
         lock: threading.Lock) -> None:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        with lock:
            report.connect_errors += 1
        return
    got = b""
    try:
        behaviour = r.randrange(10)
        if behaviour == 0:  # send in pieces
            for i in range(0, len(data), 7):
                sock.sendall(data[i:i + 7])
        elif behaviour == 1:  # send part, then vanish
            sock.sendall(data[: r.randrange(len(data) + 1)])
            return
        elif behaviour == 2:  # reset instead of closing
            sock.sendall(data)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        else:
            sock.sendall(data)
        sock.settimeout(0.25 if behaviour != 3 else 0.05)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    finally:
        sock.close()
    with lock:
        report.cases += 1
        for match in STATUS.finditer(got):
            status = int(match.group(1))
            report.statuses[status] += 1
            if status >= 500:
                report.bad.append((status, data[:300], got[:600]))


def run_fuzz(port: int, *, cases: int = 2000, threads: int = 8, seed: int = 0) -> FuzzReport:
    """Send ``cases`` fuzzed connections from ``threads`` threads."""
    report = FuzzReport()
    lock = threading.Lock()

    def worker(k: int) -> None:
        r = random.Random(seed * 1000 + k)
        for _ in range(cases // threads):
            _one(port, make_case(r), r, report, lock)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return report


def strict_json(text: bytes | str) -> object:
    """Parse as strict JSON: NaN and Infinity are not JSON."""
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)
