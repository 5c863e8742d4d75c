"""The simulated lab served three ways: in process, TCP through pyvisa-py, and pyserial (pty)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from crossbar_ctl.core.config import SimArrayConfig
from drivers import open_transport

SMALL = SimArrayConfig(rows=4, cols=3, branches=4, seed=7, profile="ideal")  # exact protocol replies
TRANSPORTS = ("inproc", "tcp", "pty")


@dataclass
class Served:
    """A SimLab and the URIs that reach its devices over one kind of transport."""

    kind: str
    lab: object
    uris: dict

    def open(self, name: str, *, timeout_s: float = 1.0, reconnects: int = 1):
        return open_transport(self.uris[name], timeout_s=timeout_s, reconnects=reconnects,
                              devices=self.lab.devices)


def serve(kind: str, lab):
    """Yield a :class:`Served` for ``lab`` over ``kind``; stops the servers afterwards."""
    from sim import LabServer

    if kind == "inproc":
        yield Served(kind, lab, {name: f"sim://{name}" for name in lab.devices})
        return
    with LabServer(lab) as server:
        if kind == "tcp":
            uris = {name: f"visa://{resource}" for name, resource in server.uris.items()}
        else:  # pyserial: the board on its pty, the SCPI instruments through socket://
            uris = {name: "serial://socket://" + ":".join(resource.split("::")[1:3])
                    for name, resource in server.uris.items()}
            uris["board"] = f"serial://{server.pty_paths['board']}"
        yield Served(kind, lab, uris)


@pytest.fixture(params=TRANSPORTS)
def served(request):
    from sim import SimLab

    yield from serve(request.param, SimLab(SMALL))


@pytest.fixture(params=[(kind, model) for kind in TRANSPORTS for model in ("keithley2450", "keithley2400")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def served_smu(request):
    from sim import SimLab

    kind, model = request.param
    yield from serve(kind, SimLab(SMALL, smu_model=model))
