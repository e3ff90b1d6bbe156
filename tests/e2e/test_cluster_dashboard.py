"""Observability of a cluster: each node's /metrics and $SYS count the whole cluster, and
the dashboard lists the nodes with their clients and load (issue #17)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import trio

from mqttish.client import Client
from mqttish.cluster.redis_server import RedisServer
from tests.e2e.browser import ROOT, chromium_page
from tests.e2e.cluster_nodes import Cluster


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def _dashboard_lists_the_nodes(port: int) -> list[str]:
    with chromium_page(viewport={"width": 1400, "height": 1000}) as page:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#nodes-panel:not([hidden])", timeout=15_000)
        # Node n1 reports the client connected to it (nodes report every lease / 3).
        page.wait_for_function(
            """() => [...document.querySelectorAll('#nodes tbody tr')].some(
                (row) => row.cells[0].textContent === 'n1' && row.cells[1].textContent === '1')""",
            timeout=15_000)
        artifacts = ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / "dashboard-cluster.png"), full_page=True)
        assert page.errors == []
        return [row.inner_text() for row in page.query_selector_all("#nodes tbody tr")]


async def test_metrics_sys_and_the_dashboard_show_the_whole_cluster(
        tmp_path: Path, redis_server: RedisServer) -> None:
    cluster = Cluster(tmp_path, redis_server.url, size=2, websocket=True, sys_interval=0.5)
    try:
        await cluster.start()
        async with Client("127.0.0.1", cluster.ports[1], client_id="on-n1"):
            rows = await trio.to_thread.run_sync(_dashboard_lists_the_nodes,
                                                 cluster.ws_ports[0])
            text = await trio.to_thread.run_sync(_metrics, cluster.ws_ports[0])
        assert "mqttish_cluster_nodes 2.0" in text
        assert 'mqttish_cluster_node_clients{member="n1.' in text
        assert len(rows) == 2
        assert any(row.startswith("n0 (this node)") for row in rows)
    finally:
        cluster.stop()
