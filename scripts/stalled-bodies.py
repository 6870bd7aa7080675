#!/usr/bin/env python3
"""Measure what stalled request bodies cost rir-serve.

Opens N connections to a running rir-serve's HTTP port, each sending the
headers of a POST infer that promises 100,000 bytes, then 10 bytes, then
nothing; records when the server answers and closes each one, and the
server's resident memory (from its metrics endpoint) before, while they are
held, and after. Prints one table.

    python3 scripts/stalled-bodies.py --http 127.0.0.1:8000 --metrics 127.0.0.1:8002 -n 1000

Standard library only.
"""
import argparse
import resource
import selectors
import socket
import statistics
import time
import urllib.request


def rss_mib(metrics):
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1]) / 2**20
    return float("nan")


def stalled_count(metrics):
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith('rir_stalled_requests_total{front="http"}'):
            return int(float(line.split()[1]))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--http", default="127.0.0.1:8000", help="rir-serve's HTTP address")
    ap.add_argument("--metrics", default="127.0.0.1:8002", help="rir-serve's metrics address")
    ap.add_argument("-n", type=int, default=1000, help="stalled connections")
    ap.add_argument("--model", default="rir-fashion-mnist")
    ap.add_argument("--wait", type=float, default=120.0, help="give up after this many seconds")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, a.n + 100)), hard))
    host, port = a.http.rsplit(":", 1)
    head = (
        f"POST /v2/models/{a.model}/infer HTTP/1.1\r\nhost: {a.http}\r\n"
        "content-type: application/json\r\ncontent-length: 100000\r\n\r\n"
    ).encode() + b'{"inputs":'
    before = rss_mib(a.metrics)
    stalled_before = stalled_count(a.metrics)
    sel = selectors.DefaultSelector()
    sent = {}
    for _ in range(a.n):
        s = socket.create_connection((host, int(port)))
        s.sendall(head)
        s.setblocking(False)
        sent[s] = time.monotonic()
        sel.register(s, selectors.EVENT_READ)
    time.sleep(1.0)
    held_rss = rss_mib(a.metrics)
    held, answers, statuses = [], 0, {}
    deadline = time.monotonic() + a.wait
    while sent and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if data:
                answers += 1
                status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "?"
                statuses[status] = statuses.get(status, 0) + 1
                continue
            held.append(time.monotonic() - sent.pop(s))
            sel.unregister(s)
            s.close()
    time.sleep(0.5)
    after = rss_mib(a.metrics)
    print(f"{a.n} connections sent headers for 100,000 bytes, then 10 bytes, then nothing")
    print(f"{'closed by the server':<34} {len(held)} of {a.n} within {a.wait:.0f} s")
    if held:
        print(f"{'held (min / median / max), s':<34} {min(held):.2f} / {statistics.median(held):.2f} / {max(held):.2f}")
    print(f"{'answers (status: count)':<34} {statuses}")
    print(f"{'rir_stalled_requests_total added':<34} {stalled_count(a.metrics) - stalled_before}")
    print(f"{'server RSS before / held / after':<34} {before:.1f} / {held_rss:.1f} / {after:.1f} MiB")
    for s in sent:
        s.close()


if __name__ == "__main__":
    main()
