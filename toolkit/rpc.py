"""A remote device behind a TVM RPC tracker, as tvmc's --rpc-tracker/--rpc-key name it."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import DltkError


@dataclass(frozen=True)
class RpcTarget:
    host: str
    port: int
    key: str

    def __str__(self) -> str:
        return f"rpc {self.key}@{self.host}:{self.port}"


def rpc_target(tracker: str | None, key: str | None) -> RpcTarget | None:
    """`--rpc-tracker HOST:PORT --rpc-key KEY` as an RpcTarget; None when neither is given."""
    if not tracker and not key:
        return None
    host, sep, port = (tracker or "").rpartition(":")
    if not (tracker and key and sep and host and port.isdigit()):
        raise DltkError("remote measurement needs both --rpc-tracker HOST:PORT and --rpc-key KEY",
                        "e.g. --rpc-tracker 127.0.0.1:9190 --rpc-key board")
    return RpcTarget(host, int(port), key)
