"""Runs a module as a child of the benchmark: ``python -m bench.child MODULE [PROFILE_OUT]``.

The child is started through the edge's parent-death launcher (services.edge), so the kernel
sends it SIGTERM when the benchmark dies and none is orphaned, with no `preexec_fn`. With
PROFILE_OUT the
module runs under cProfile (call counts; for where time goes, attach `py-spy record
--nonblocking -p PID` instead) and the stats are written when it exits (SIGTERM stops a
service gracefully).
"""

from __future__ import annotations

import cProfile
import runpy
import sys


def main() -> None:
    module = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else ""
    sys.argv = [module]
    if not out:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        prof.disable()
        prof.dump_stats(out)


if __name__ == "__main__":
    main()
