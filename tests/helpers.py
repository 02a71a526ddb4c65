"""Small helpers shared by several test modules."""

import socket


def free_port() -> int:
    """A TCP port free on loopback now (torch.distributed's rendezvous, slurmctld)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
