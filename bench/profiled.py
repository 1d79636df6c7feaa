"""Runs a service module under cProfile: ``python -m bench.profiled services.rooms OUT.pstats``.

The stats are written when the service exits (SIGTERM stops it gracefully). Used to find what
limits a figure (py-spy is not available here; cProfile is the standard library's profiler).
"""

from __future__ import annotations

import cProfile
import runpy
import sys


def main() -> None:
    module, out = sys.argv[1], sys.argv[2]
    sys.argv = [module]
    prof = cProfile.Profile()
    prof.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        prof.disable()
        prof.dump_stats(out)


if __name__ == "__main__":
    main()
