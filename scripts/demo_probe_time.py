"""The demo's CPU time in the drift guard's probes (``measure_plan``: the fresh reference at the
end of programming and the check's guard), against the whole demo's, in the same run.

    python scripts/demo_probe_time.py [demo options]    # JSON on stderr
"""
import json
import sys
import time

import crossbar_ctl.engine._guard as G

orig = G.measure_plan
spent = {"s": 0.0, "calls": []}
def timed(*a, **k):
    t = time.process_time(); r = orig(*a, **k); d = time.process_time() - t
    spent["s"] += d; spent["calls"].append((k.get("passes", 1), round(d, 2), r.readings)); return r
G.measure_plan = timed
from crossbar_ctl.cli._main import main

t0, c0 = time.monotonic(), time.process_time()
code = main(["demo", "--json"] + sys.argv[1:])
print(json.dumps({"code": code, "wall_s": time.monotonic() - t0, "cpu_s": time.process_time() - c0,
                  "probe_cpu_s": spent["s"], "calls": spent["calls"]}), file=sys.stderr)
