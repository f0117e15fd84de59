"""What the interop checks of the demo share: the fixtures, a check that records failures, and
starting the demo binary on a free loopback port."""
import socket, subprocess

ALICE, BOB = "msk_demo_alice", "msk_demo_bob"
C_ALICE = "11111111-1111-4111-8111-111111111111"
C_BOB = "22222222-2222-4222-8222-222222222222"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo(demo, *extra):
    """The demo on a free port, `--no-simulation`, once it prints its `listening on` line."""
    port = free_port()
    proc = subprocess.Popen([demo, "--addr", f"127.0.0.1:{port}", "--no-simulation", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("listening on http://"), line
    return proc, port
