"""Several Keyhive servers on one PostgreSQL database: one of them runs the cluster's scheduled work.

Real ``keyhive server`` processes on the session's throwaway PostgreSQL, each unsealed
with the same share, passing every half second.  The scheduler lease is read straight
from PostgreSQL's table: one holder while both run, handed over at once when the holder
shuts down, and taken over once its ttl has run out when the holder is killed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from keyhive.scheduler import MIN_LEASE_TTL_SECONDS
from tests.conftest import RunningServer, admin_call, start_server, wait_for
from tests.postgres import PgCluster, cluster, require_psycopg

require_psycopg()  # before importing psycopg
import psycopg

INTERVAL = 0.5
LEASE_PATH = "core/leases/scheduler"


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> PgCluster:
    return cluster(request.config)


def lease(url: str) -> dict[str, Any] | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT value FROM records WHERE path = %s", (LEASE_PATH,)).fetchone()
    return None if row is None else json.loads(bytes(row[0]))


def start_node(tmp: Path, url: str, share: str | None = None) -> RunningServer:
    server = start_server(tmp, "--storage", url, "--scheduler-interval", str(INTERVAL))
    if share is not None:
        code, status = admin_call(server.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
        assert code == 200 and status["sealed"] is False, status
    return server


def holder_other_than(url: str, gone: str) -> Callable[[], str | None]:
    def check() -> str | None:
        current = lease(url)
        return current["holder"] if current and current["holder"] != gone else None
    return check


def test_one_holder_handed_over_at_shutdown_and_taken_over_after_a_crash(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.new_database()
    first = start_node(tmp_path, url)
    servers = [first]
    try:
        code, init = admin_call(first.endpoint, "POST", "/keyhive/v1/sys/init", {"shares": 1, "threshold": 1})
        assert code == 200, init
        share = init["shares"][0]
        assert lease(url) is None  # a sealed node does no scheduled work
        admin_call(first.endpoint, "POST", "/keyhive/v1/sys/unseal", {"share": share})
        holder_1 = wait_for(lambda: (lease(url) or {}).get("holder"), 10)
        assert f"held by {holder_1}" in first.log()

        # A second node runs its passes, but the first keeps the lease, renewing it.
        second = start_node(tmp_path, url, share)
        servers.append(second)
        seen = lease(url)
        time.sleep(4 * INTERVAL)
        now = lease(url)
        assert seen and now and now["holder"] == seen["holder"] == holder_1
        assert now["expires"] > seen["expires"]
        assert now["expires"] - time.time() > MIN_LEASE_TTL_SECONDS - 2 * INTERVAL

        # A clean shutdown releases it: the second node takes it on its next pass.
        stopped = time.monotonic()
        first.stop()
        holder_2 = wait_for(holder_other_than(url, holder_1), 5)
        assert time.monotonic() - stopped < 5 < MIN_LEASE_TTL_SECONDS
        assert f"released by {holder_1}" in first.log()
        assert f"held by {holder_2}" in second.log()

        # A crash leaves it to expire: a third node takes it over then, not before.
        third = start_node(tmp_path, url, share)
        servers.append(third)
        time.sleep(2 * INTERVAL)
        assert lease(url)["holder"] == holder_2  # type: ignore[index]
        second.stop("kill")
        expires = lease(url)["expires"]  # type: ignore[index]
        holder_3 = wait_for(holder_other_than(url, holder_2), MIN_LEASE_TTL_SECONDS + 5)
        taken = time.time()
        assert expires <= taken < expires + 3 * INTERVAL + 1
        assert f"held by {holder_3}" in third.log() and f"{holder_2}'s had expired" in third.log()
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        assert "Traceback" not in server.log()
