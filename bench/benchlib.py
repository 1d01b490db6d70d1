"""What the bench/run-* Python scripts share. Import it with the script's
own folder on sys.path (a script run from anywhere has it first)."""
import random
import socket


def free_port(n=1):
    """A loopback port p with p..p+n-1 all free, below the ephemeral range
    so no client socket can sit on it; None if 500 tries found none."""
    for _ in range(500):
        p = random.randrange(10000, 30000 - n)
        ok = True
        for q in range(p, p + n):
            s = socket.socket()
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", q))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return p
    return None
