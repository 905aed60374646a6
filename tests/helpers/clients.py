#!/usr/bin/env python3
"""clients.py - many raw clients at once, for stereod's lock-out and memory tests.

  clients.py hold N tcp|unix TARGET PREFIX READYFILE
      open N connections, send PREFIX on each (half a request), write READYFILE, hold them
  clients.py flood nd HOST:PORT
      1,000 clients each write 440 KB of get_health requests and never read
  clients.py flood ipc SOCKET
      300 clients each write a request whose 1 MB body never completes

A flood writes on non-blocking sockets until no socket takes more, prints "sent N MB".
"""
import socket
import sys
import time


def connect(kind, target, rcvbuf=0):
    if kind == "tcp":
        h, p = target.rsplit(":", 1)
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.connect((h, int(p)))
        return s
    s = socket.socket(socket.AF_UNIX)
    for _ in range(3000):   # a full unix backlog says EAGAIN: the server catches up
        try:
            s.connect(target)
            return s
        except BlockingIOError:
            time.sleep(0.01)
    raise TimeoutError("cannot connect to " + target)


def hold(n, kind, target, prefix, ready):
    socks = []
    for _ in range(n):
        s = connect(kind, target)
        s.sendall(prefix.encode())
        socks.append(s)
    with open(ready, "w") as f:
        f.write("%d\n" % len(socks))
    time.sleep(600)


def flood(kind, target):
    if kind == "nd":
        data = b'{"type":"get_health"}\n' * 20000
        socks = [connect("tcp", target, rcvbuf=4096) for _ in range(1000)]   # replies pile up
    else:
        data = (b"POST /v1/secrets HTTP/1.1\r\nHost: x\r\nContent-Length: 1040000\r\n\r\n"
                + b"x" * 1000000)
        socks = [connect("unix", target) for _ in range(300)]
    sent = [0] * len(socks)
    for s in socks:
        s.setblocking(False)
    for _ in range(60):
        progress = 0
        for i, s in enumerate(socks):
            if sent[i] >= len(data):
                continue
            try:
                k = s.send(data[sent[i]:sent[i] + 262144])
                sent[i] += k
                progress += k
            except (BlockingIOError, ConnectionResetError, BrokenPipeError):
                pass
        if not progress:
            time.sleep(0.05)
    print("sent %d MB" % (sum(sent) >> 20))


if __name__ == "__main__":
    if sys.argv[1] == "hold":
        hold(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        flood(sys.argv[2], sys.argv[3])
