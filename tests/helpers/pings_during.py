#!/usr/bin/env python3
# pings_during.py [--reply-first] ADDR STARTED GO REQUEST - show that slow work does not hold
# up the loop. Connection A sends REQUEST (a JSON object, sent with "id":1) and a ping (id 2).
# With --reply-first the request is answered at once and starts the slow work (shutdown): its
# reply and the pong are read first, and A must then get nothing more. The slow part may
# create STARTED.ended when it ends: that file must not exist yet when the pings are done. Once the file
# STARTED exists (the slow part has begun), connection B sends 100 pings one at a time; each
# must be answered while A has received nothing. Then the file GO is created (the slow part may
# end), and A must get REQUEST's reply (printed) and then its pong, in that order. Prints the
# ping latencies seen meanwhile. Exit 1 with a reason on any failure; waits are hang guards.
import json, os, socket, sys, time

args = sys.argv[1:]
reply_first = args[:1] == ["--reply-first"]
if reply_first:
    args = args[1:]
addr, started, go, request = args[:4]
host, port = addr.rsplit(":", 1)
req = json.loads(request)
req["id"] = 1
a = socket.create_connection((host, int(port)), timeout=30)
a.sendall(json.dumps(req).encode() + b'\n{"type":"ping","id":2}\n')
af = a.makefile("rb")
if reply_first:
    first, second = json.loads(af.readline()), json.loads(af.readline())
for _ in range(800):
    if os.path.exists(started):
        break
    time.sleep(0.025)
else:
    sys.exit("the slow part never started")
b = socket.create_connection((host, int(port)), timeout=30)
bf = b.makefile("rb")
lat = []
for i in range(100):
    t = time.monotonic()
    b.sendall(b'{"type":"ping","id":%d}\n' % i)
    line = json.loads(bf.readline())
    lat.append((time.monotonic() - t) * 1000)
    if line != {"type": "pong", "id": i}:
        sys.exit("unexpected reply on B: %r" % line)
if os.path.exists(started + ".ended"):
    sys.exit("the slow part ended before the pings were answered")
a.setblocking(False)
try:
    early = a.recv(65536)
except BlockingIOError:
    early = None
if early is not None:
    sys.exit("connection A got %r before the slow part ended" % early)
open(go, "w").close()
a.setblocking(True)
if not reply_first:
    first, second = json.loads(af.readline()), json.loads(af.readline())
print(json.dumps(first, separators=(",", ":")))
if first.get("id") != 1:
    sys.exit("A's first reply is not the slow request's: %r" % first)
if second != {"type": "pong", "id": 2}:
    sys.exit("A's second reply is not its pong: %r" % second)
lat.sort()
print("pings meanwhile: p50 %.2f ms, p99 %.2f ms, max %.2f ms" % (lat[49], lat[98], lat[99]))
