"""Ports for the servers that the tests and `just dev` start on this machine."""

import socket

from devtools.embedded import free_ports


def test_free_ports_are_different_and_nothing_listens_on_them() -> None:
    ports = free_ports(50)

    assert len(set(ports)) == len(ports) == 50
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", port))  # raises when the port is taken
