"""The tests' fake internet now lives in the package (``containai.bench.fakenet``), where the benchmark
harness uses it too; this module keeps the tests' imports working."""

from containai.bench.fakenet import (
    ALIASES,
    CANARY_TCP,
    CANARY_UDP,
    DEFAULT_ZONE,
    HOSTS,
    ULIMITS,
    FakeInternet,
    FakeNetError,
    nonce,
    wait_until,
)

__all__ = [
    "ALIASES",
    "CANARY_TCP",
    "CANARY_UDP",
    "DEFAULT_ZONE",
    "HOSTS",
    "ULIMITS",
    "FakeInternet",
    "FakeNetError",
    "nonce",
    "wait_until",
]
