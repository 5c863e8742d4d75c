"""The demo's CPU time in the drift guard's probes (``measure_plan``: the fresh reference at the
end of programming and the check's guard), against the whole demo's, in the same run.

    python scripts/demo_probe_time.py [demo options]    # JSON on stderr
"""

from __future__ import annotations

import json
import sys
import time

import crossbar_ctl.engine._guard as guard
from crossbar_ctl.cli._main import main

measure_plan = guard.measure_plan
calls: list[dict] = []


def timed(*args, **kwargs):
    started = time.process_time()
    probe = measure_plan(*args, **kwargs)
    calls.append({"passes": kwargs.get("passes", 1), "cpu_s": time.process_time() - started,
                  "readings": probe.readings})
    return probe


guard.measure_plan = timed  # program_plan and probe_plan look it up at call time
started, cpu = time.monotonic(), time.process_time()
code = main(["demo", "--json", *sys.argv[1:]])
print(json.dumps({"code": code, "wall_s": time.monotonic() - started, "cpu_s": time.process_time() - cpu,
                  "probe_cpu_s": sum(c["cpu_s"] for c in calls), "calls": calls}), file=sys.stderr)
