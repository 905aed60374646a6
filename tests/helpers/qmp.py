#!/usr/bin/python3
# qmp.py - a minimal QMP client for the clone tests and benchmark: connect to QEMU's QMP unix
# socket, negotiate capabilities, run each COMMAND (a QMP command name, or NAME=JSON for one
# with arguments) in order and print each "return" as one JSON line. "wait-migrate" is not a
# QMP command: it polls query-migrate until the status is "completed" (exit 1 on "failed" or
# "cancelled", or after 120 s). Exit 1 on any QMP error, 3 when the socket cannot be reached
# within 30 s.
#
# usage: qmp.py SOCKET COMMAND...
#   qmp.py q.sock stop 'migrate={"uri":"exec:cat > snap"}' wait-migrate quit
import json
import socket
import sys
import time


def main():
    if len(sys.argv) < 3:
        print("usage: qmp.py SOCKET COMMAND...", file=sys.stderr)
        return 2
    path = sys.argv[1]
    deadline = time.monotonic() + 30
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            break
        except OSError as e:
            s.close()
            if time.monotonic() > deadline:
                print(f"qmp: {path}: {e}", file=sys.stderr)
                return 3
            time.sleep(0.02)
    f = s.makefile("rw")

    def reply():
        # skip asynchronous events; return the next return/error object
        while True:
            line = f.readline()
            if not line:
                raise EOFError("QEMU closed the QMP socket")
            m = json.loads(line)
            if "return" in m or "error" in m:
                return m

    def run(name, args=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        f.write(json.dumps(msg) + "\n")
        f.flush()
        m = reply()
        if "error" in m:
            raise RuntimeError(f"{name}: {m['error'].get('desc', m['error'])}")
        return m["return"]

    try:
        json.loads(f.readline())                # the greeting
        run("qmp_capabilities")
        for cmd in sys.argv[2:]:
            if cmd == "wait-migrate":
                end = time.monotonic() + 120
                while True:
                    st = run("query-migrate")
                    status = st.get("status")
                    if status == "completed":
                        print(json.dumps(st))
                        break
                    if status in ("failed", "cancelled") or time.monotonic() > end:
                        print(f"qmp: migration {status}: {st.get('error-desc', '')}",
                              file=sys.stderr)
                        return 1
                    time.sleep(0.05)
                continue
            if cmd == "wait-incoming":
                end = time.monotonic() + 120
                while run("query-status").get("status") == "inmigrate":
                    if time.monotonic() > end:
                        print("qmp: the incoming migration did not finish", file=sys.stderr)
                        return 1
                    time.sleep(0.02)
                continue
            name, _, args = cmd.partition("=")
            if name == "quit":
                f.write(json.dumps({"execute": "quit"}) + "\n")
                f.flush()
                try:
                    reply()
                except (EOFError, OSError):
                    pass
                print("{}")
                continue
            print(json.dumps(run(name, json.loads(args) if args else None)))
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        print(f"qmp: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
