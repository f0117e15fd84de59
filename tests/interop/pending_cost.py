#!/usr/bin/env python3
"""What a pending (not yet upgraded) connection costs a demo server: RSS per connection, and
how many are still open after the demo's handshake timeout.

    python3 tests/interop/pending_cost.py target/debug/examples/demo silent|drip [N]

`silent`: N TCP connections that send nothing; `drip`: N that send a request line and one
header, then nothing more. Only loopback; the demo is started and killed by the script.
"""
import socket, subprocess, sys, time


def rss(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main():
    demo, mode = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    proc = subprocess.Popen([demo, "--addr", "127.0.0.1:0", "--no-simulation"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        time.sleep(0.5)
        base = rss(proc.pid)
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            if mode == "drip":
                s.sendall(b"GET /mail/ws/inbox HTTP/1.1\r\nX-A: b\r\n")
            socks.append(s)
        time.sleep(1.5)
        held = rss(proc.pid)
        print(f"{mode}: {n} pending, RSS {base / 2**20:.1f} -> {held / 2**20:.1f} MiB, "
              f"{(held - base) / n / 1024:.1f} KiB per pending connection")
        time.sleep(11)  # past the default 10 s handshake timeout
        still_open = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) != b"":
                    still_open += 1
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
        print(f"after 12.5 s: {still_open} of {n} still open")
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
