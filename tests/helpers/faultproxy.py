#!/usr/bin/env python3
"""faultproxy.py - an HTTP/1.1 proxy in front of a real server (nginx) that injects faults
into chunk requests (GETs with a Range other than the one-byte probe "bytes=0-0"), for
tests/stereo-uffd-remote.bats.

usage: faultproxy.py PORTFILE UPSTREAM_PORT MODEFILE LOGFILE

It listens on 127.0.0.1 (a port the kernel picks, written to PORTFILE). Before each chunk
request it reads MODEFILE: "MODE [COUNT] [ARG]": the fault applies to the next COUNT chunk
requests (-1 or absent: all), then the proxy passes through. Modes:
  pass      forward as is
  503       answer 503 without asking upstream
  reset     close the connection without an answer (RST)
  stall     send the headers and half the body, then wait ARG seconds (default 30) and close
  short     send the headers (full Content-Length) and half the body, then close
  badrange  forward, with a Content-Range shifted by one block
  whole     answer 200 with the whole object (as a server ignoring Range would)
  replace   forward this one, then rename ARG (OBJECT.new, a new version written by the test
            beside it) over OBJECT: the object changes between chunks
Each chunk request is logged to LOGFILE as "RANGE MODE".
"""
import http.client
import os
import socket
import socketserver
import struct
import sys
import threading
import time

portfile, upstream, modefile, logfile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lock = threading.Lock()
used = 0   # chunk requests the current mode has applied to
mode_seen = None


def next_mode():
    global used, mode_seen
    with lock:
        try:
            text = open(modefile).read().split()
        except OSError:
            text = []
        if text != mode_seen:
            mode_seen, used = text, 0
        mode = text[0] if text else "pass"
        count = int(text[1]) if len(text) > 1 else -1
        arg = text[2] if len(text) > 2 else None
        if count >= 0 and used >= count:
            return "pass", None
        used += 1
        return mode, arg


class Handler(socketserver.BaseRequestHandler):
    def read_head(self, f):
        lines = []
        while True:
            line = f.readline(65536)
            if not line:
                return None
            if line in (b"\r\n", b"\n"):
                return lines
            lines.append(line.decode("latin-1").rstrip("\r\n"))

    def send(self, data):
        self.request.sendall(data)

    def handle(self):
        f = self.request.makefile("rb")
        while True:
            head = self.read_head(f)
            if not head:
                return
            method, path, _ = head[0].split(" ", 2)
            hdrs = {}
            for h in head[1:]:
                k, _, v = h.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            rng = hdrs.get("range")
            chunk = rng is not None and rng != "bytes=0-0"
            mode, arg = next_mode() if chunk else ("pass", None)
            if chunk:
                with lock, open(logfile, "a") as lf:
                    lf.write("%s %s\n" % (rng, mode))
            if mode == "503":
                self.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                continue
            if mode == "reset":
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.request.close()
                return
            up = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
            fwd = {} if mode == "whole" or rng is None else {"Range": rng}
            up.request(method, path, headers=fwd)
            r = up.getresponse()
            body = r.read()
            status, reason = r.status, r.reason
            out = [(k, v) for k, v in r.getheaders()
                   if k.lower() in ("content-range", "etag", "last-modified", "content-type")]
            up.close()
            if mode == "badrange":
                a, b = rng[6:].split("-")
                size = dict((k.lower(), v) for k, v in out)["content-range"].split("/")[1]
                out = [(k, v) for k, v in out if k.lower() != "content-range"]
                out.append(("Content-Range", "bytes %d-%d/%s" % (int(a) + 4096, int(b) + 4096, size)))
            headtxt = "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (status, reason, len(body))
            headtxt += "".join("%s: %s\r\n" % kv for kv in out) + "\r\n"
            if mode in ("stall", "short"):
                self.send(headtxt.encode("latin-1") + body[: len(body) // 2])
                if mode == "stall":
                    time.sleep(float(arg or 30))
                self.request.close()
                return
            self.send(headtxt.encode("latin-1") + body)
            if mode == "replace" and arg:
                os.replace(arg, arg[: -len(".new")])


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


srv = Server(("127.0.0.1", 0), Handler)
tmp = portfile + ".tmp"
with open(tmp, "w") as pf:
    pf.write("%d\n" % srv.server_address[1])
os.rename(tmp, portfile)
srv.serve_forever()
