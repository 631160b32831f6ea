"""S1: try TCP to the given host:port targets and DNS lookups of the given names; print what succeeded."""

import json
import socket
import sys


def tcp(target: str) -> str:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return "connected"
    except OSError as exc:
        return f"failed: {exc.__class__.__name__}"


def dns(name: str) -> str:
    try:
        return "resolved: " + ",".join(sorted({info[4][0] for info in socket.getaddrinfo(name, 80)}))
    except OSError as exc:
        return f"failed: {exc.__class__.__name__}"


def udp_dns(server: str) -> str:
    # A raw DNS query straight to a resolver, bypassing /etc/resolv.conf.
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1)
            sock.sendto(query, (server, 53))
            sock.recvfrom(512)
            return "answered"
    except OSError as exc:
        return f"failed: {exc.__class__.__name__}"


def main(argv: list[str]) -> None:
    targets = [a for a in argv if ":" in a]
    names = [a for a in argv if ":" not in a]
    print(
        json.dumps(
            {
                "tcp": {t: tcp(t) for t in targets},
                "dns": {n: dns(n) for n in names},
                "udp_dns": {s: udp_dns(s) for s in ("8.8.8.8", "127.0.0.53", "127.0.0.1")},
                "interfaces": sorted(name for _, name in socket.if_nameindex()),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
