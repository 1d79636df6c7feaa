"""Generate the Python package `gen/arconv` from protos/ (messages, .pyi stubs, grpc stubs).

The output is never edited by hand; `make protos` reruns this script.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "gen"


def main() -> int:
    shutil.rmtree(OUT / "arconv", ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{well_known}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            *files,
        ]
    )
    if rc != 0:
        return int(rc)
    for d in (OUT / "arconv").rglob("*"):
        if d.is_dir():
            (d / "__init__.py").touch()
    (OUT / "arconv" / "__init__.py").touch()
    (OUT / "arconv" / "py.typed").touch()
    print(f"generated {len(files)} proto files into {OUT.relative_to(ROOT)}/arconv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
