"""`make screenshot`: the README's picture of the web client mid-reply, from a real mesh.

Starts the services and Envoy as the browser tests do (a temporary directory, the demo agents),
serves web/dist, lets headless Chromium open the client, greet Nova and photograph the page while
she answers; writes the PNG to the path given (docs/client.png).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from services.mesh import static_site
from tests.edge.mesh_fixtures import ROOT, start_edge_mesh
from tests.edge.test_browser import drive


async def main(target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="arconv-shot-") as tmp:
        work = Path(tmp)
        async with start_edge_mesh(work, llm_pacing_ms=40) as mesh:
            with static_site(ROOT / "web" / "dist") as origin:
                url = f"{origin}/?" + urlencode({"edge": mesh.url, "agent": "nova"})
                url += "#" + urlencode({"token": mesh.token("alice")})
                await asyncio.to_thread(drive, "screenshot", url, work / "profile", work)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "client.png", target)
    print(f"wrote {target}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/client.png")))
