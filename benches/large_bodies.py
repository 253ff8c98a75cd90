#!/usr/bin/env python3
"""Clients that post the largest bodies bouncer takes, as fast as they can.

    python3 benches/large_bodies.py PORT CLIENTS BYTES SECONDS [KIND]

Each of CLIENTS connections posts a body of BYTES to /sns on 127.0.0.1:PORT,
reads the answer, and starts again on a new connection, for SECONDS. KIND
is `brace` ("{" and then letters: refused as malformed JSON at its first
bytes), or `json` (an object with one long string: parsed whole before it
is refused). Prints the requests answered by status. Read the server's
peak memory from /proc/PID/status (VmHWM) before and after
(BENCHMARKS.md, "Large bodies").
"""
import socket
import sys
import threading
import time


def body(kind, size):
    if kind == "brace":
        return b"{" + b"a" * (size - 1)
    if kind == "json":
        head = b'{"Type":"Notification","Message":"'
        return head + b"x" * (size - len(head) - 2) + b'"}'
    raise SystemExit(f"unknown kind {kind}")


def main():
    port, clients, size, seconds = (int(a) for a in sys.argv[1:5])
    kind = sys.argv[5] if len(sys.argv) > 5 else "brace"
    payload = body(kind, size)
    request = (
        b"POST /sns HTTP/1.1\r\nHost: bench\r\nx-amz-sns-message-type: Notification\r\n"
        b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(payload)
    ) + payload
    stop = time.time() + seconds
    statuses = {}
    lock = threading.Lock()

    def run():
        while time.time() < stop:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(request)
                answer = b""
                while b"\r\n\r\n" not in answer:
                    got = s.recv(65536)
                    if not got:
                        break
                    answer += got
            status = answer[9:12].decode() or "closed"
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(statuses.values()), "answered:", dict(sorted(statuses.items())))


if __name__ == "__main__":
    main()
