"""`make run`'s runner as a newcomer uses it: five processes, healthy, clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.edge.conftest import free_port

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.envoy
async def test_mesh_starts_five_healthy_processes_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("rooms", "stream", "avatar", "token")}
    edge_port, admin_port = free_port(), free_port()
    env = {
        **os.environ,
        "ARCONV_VAR_DIR": str(tmp_path / "var"),
        "ARCONV_EDGE_PORT": str(edge_port),
        "ARCONV_EDGE_ADMIN_PORT": str(admin_port),
        "ARCONV_MESH_METRICS": "0",
        "ARCONV_LLM_PACING_MS": "0",
        **{f"ARCONV_{n.upper()}_ADDR": f"127.0.0.1:{p}" for n, p in ports.items()},
    }
    for var in ("ARCONV_DATABASE_URL", "ARCONV_REDIS_URL"):
        env.pop(var, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.mesh",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    banner: list[str] = []
    drain: asyncio.Future[bytes] | None = None
    try:
        async with asyncio.timeout(120):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "the mesh exited before it was up:\n" + "".join(banner)
                banner.append(line)
                if "Ctrl-C stops everything" in line:
                    break
        # Keep reading the runner's output so it never blocks on a full pipe.
        drain = asyncio.ensure_future(proc.stdout.read())
        text = "".join(banner)
        assert f"127.0.0.1:{edge_port}" in text
        assert "export TOKEN=" in text
        children = _children(proc.pid)
        assert len(children) == 5, text
        listed = await asyncio.to_thread(
            subprocess.run,
            [GRPCURL, "-plaintext", f"127.0.0.1:{edge_port}", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for svc in (
            "arconv.rooms.v1.RoomService",
            "arconv.stream.v1.StreamService",
            "arconv.avatar.v1.AvatarService",
            "arconv.token.v1.TokenService",
        ):
            assert svc in listed.stdout.split(), listed.stderr
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            rc = await proc.wait()
        assert rc == 0
        assert not [pid for pid in children if _alive(pid)], "orphan processes left behind"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if drain is None:
            drain = asyncio.ensure_future(proc.stdout.read())
        # The children follow the runner (SIGTERM on parent death) and close the pipe.
        await asyncio.wait_for(drain, timeout=60)
