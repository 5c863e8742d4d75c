"""Faults injected in the simulator: a clear error naming instrument and command, never a hang,
and a lab left safe (outputs off, switches open) even when an instrument fails."""

import time

import numpy as np
import pytest

from crossbar_ctl.core.config import LabConfig
from crossbar_ctl.core.errors import ConnectionLost, InstrumentError, InstrumentReportedError, InstrumentTimeout
from crossbar_ctl.core.errors import ProtocolError
from drivers import build_lab
from tests.drivers.conftest import SMALL, serve

TIMEOUT_S = 0.3
CONFIG = LabConfig(sim=SMALL)


def open_served_lab(served):
    transports = {"switch_board": served.open("board", timeout_s=TIMEOUT_S),
                  "source_meter": served.open("smu", timeout_s=TIMEOUT_S)}
    return build_lab(CONFIG, transports, min_resistance_ohm=2e3, sim=served.lab)


def assert_safe(sim):
    assert not sim.array.masks.any()
    assert (sim.board.row_routes == "GND").all() and (sim.board.col_routes == "GND").all()
    assert sim.smu.output_on is False


def expected_error(kind, transport_kind, instrument):
    if kind == "hang":
        return InstrumentTimeout
    if kind == "garbage":
        return ProtocolError
    if kind == "error":
        return InstrumentReportedError
    # drop: a TCP connection is closed (reopened once, then lost); a pty has no connection to
    # close, so the line is simply lost and the reply never comes
    if transport_kind == "pty" and instrument == "board":
        return InstrumentTimeout
    return ConnectionLost


def busy_lab(lab):
    lab.board.set_mask(0, 0, 1)
    lab.routing.connect(source_rows=[0], sense_cols=[0])
    lab.source_meter.set_source_voltage_v(0.1)
    lab.source_meter.output_on()


@pytest.mark.parametrize("kind", ["hang", "garbage", "error", "drop"])
@pytest.mark.parametrize("instrument", ["smu", "board"])
@pytest.mark.parametrize("transport_kind", ["inproc", "tcp", "pty"])
def test_fault_gives_a_clear_error_and_a_safe_lab(transport_kind, instrument, kind):
    from sim import SimLab

    for served in serve(transport_kind, SimLab(SMALL)):
        sim = served.lab
        lab = open_served_lab(served)
        busy_lab(lab)
        device = sim.devices[instrument]
        device.inject_fault(kind)
        start = time.perf_counter()
        with pytest.raises(expected_error(kind, transport_kind, instrument)) as info:
            if instrument == "smu":
                lab.source_meter.set_nplc(0.1)      # a configuration, checked with :SYST:ERR?
            else:
                lab.board.set_mask(1, 1, 3)
        elapsed = time.perf_counter() - start
        assert elapsed < 2 * TIMEOUT_S * 1.5 + 0.5   # at most one reconnect, never a hang
        message = str(info.value)
        assert served.uris[instrument] in message
        commands = [":SENS:CURR:NPLC 0.1", ":SYST:ERR?"] if instrument == "smu" else ["SET 1 1 3"]
        assert info.value.command in commands and repr(info.value.command) in message
        device.clear_fault()
        lab.close()
        assert_safe(sim)


@pytest.mark.parametrize("transport_kind", ["inproc", "tcp"])
def test_a_lab_is_left_safe_when_one_instrument_stays_dead(transport_kind):
    from sim import SimLab

    for served in serve(transport_kind, SimLab(SMALL)):
        sim = served.lab
        with pytest.raises(InstrumentTimeout):
            with open_served_lab(served) as lab:
                busy_lab(lab)
                sim.smu.inject_fault("hang")       # the SMU stops answering for good
                lab.source_meter.measure_current_a()
        # the original error came through; the board was still made safe
        assert not sim.array.masks.any()
        assert (sim.board.row_routes == "GND").all()
        sim.smu.clear_fault()


def test_safe_state_tries_every_instrument_and_names_the_failures():
    from sim import SimLab

    for served in serve("inproc", SimLab(SMALL)):
        sim = served.lab
        lab = open_served_lab(served)
        busy_lab(lab)
        sim.smu.inject_fault("drop")
        with pytest.raises(InstrumentError, match="source_meter") as info:
            lab.safe_state()
        assert "switch_board" not in str(info.value)
        assert not sim.array.masks.any()
        sim.smu.clear_fault()
        lab.safe_state()
        assert_safe(sim)


def test_ctrl_c_inside_a_with_block_leaves_the_lab_safe():
    from sim import SimLab

    for served in serve("inproc", SimLab(SMALL)):
        with pytest.raises(KeyboardInterrupt):
            with open_served_lab(served) as lab:
                busy_lab(lab)
                raise KeyboardInterrupt
        assert_safe(served.lab)


def test_a_dropped_lan_connection_is_reopened_once():
    from sim import SimLab

    for served in serve("tcp", SimLab(SMALL)):
        lab = open_served_lab(served)
        served.lab.smu.inject_fault("drop", count=1)
        lab.source_meter.set_nplc(0.1)               # dropped, reopened, resent: succeeds
        assert served.lab.smu.nplc == 0.1
        lab.close()


def test_readout_fault_ends_in_a_clear_error():
    from sim import SimLab

    for served in serve("inproc", SimLab(SMALL)):
        lab = open_served_lab(served)
        lab.board.safe()                            # masks known: the next line is the MVM
        served.lab.board.inject_fault("error")
        with pytest.raises(InstrumentReportedError, match="hardware fault.*MVM"):
            lab.readout.mvm(np.full(4, 0.05))
        lab.close()
        assert_safe(served.lab)


@pytest.mark.parametrize("transport_kind", ["tcp", "pty"])
def test_a_link_lost_during_a_sweep_gives_an_instrument_error(transport_kind):
    # the sweep sets a longer timeout and restores it afterwards: restoring it on a link that is
    # gone must not hide the ConnectionLost (or timeout) behind an AttributeError
    from sim import SimLab

    for served in serve(transport_kind, SimLab(SMALL)):
        sim = served.lab
        lab = open_served_lab(served)
        busy_lab(lab)
        sim.smu.inject_fault("drop")
        with pytest.raises(InstrumentError):
            lab.source_meter.sweep_voltages_v([0.1, 0.2])
        sim.smu.clear_fault()
        lab.close()
        assert_safe(sim)


@pytest.mark.parametrize("failure", ["matrix_model", "no_readout"])
def test_a_failed_build_leaves_the_identified_instruments_safe(failure):
    from crossbar_ctl.core.errors import ConfigError
    from sim import SimLab

    sim_config = SMALL if failure == "matrix_model" else SMALL.model_copy(update={"has_readout": False})
    sim = SimLab(sim_config)
    for served in serve("inproc", sim):
        first = open_served_lab(served)               # leave the lab busy, then walk away
        busy_lab(first)
        sim.matrix.closed.add((1, 2))
        assert sim.array.masks.any() and sim.smu.output_on is True
        if failure == "matrix_model":                 # board and SMU identified, then a wrong model
            instruments = {"switch_matrix": {"uri": "sim://matrix", "model": "e5250a"}}
        else:                                         # board and matrix identified, nothing reads
            instruments = {"source_meter": None, "switch_matrix": {"uri": "sim://matrix", "model": "e5250a"}}
        config = LabConfig(sim=sim_config, instruments=instruments)
        if failure == "matrix_model":  # the config refuses it too; build_lab checks again (a built config)
            matrix = config.instruments.switch_matrix.model_copy(update={"model": "nonesuch"})
            config = config.model_copy(update={"instruments": config.instruments.model_copy(
                update={"switch_matrix": matrix})})
        transports = {"switch_board": served.open("board"), "source_meter": served.open("smu"),
                      "switch_matrix": served.open("matrix")}
        with pytest.raises(ConfigError):
            build_lab(config, transports, min_resistance_ohm=2e3, sim=sim)
        assert not sim.array.masks.any()
        assert (sim.board.row_routes == "GND").all() and (sim.board.col_routes == "GND").all()
        if failure == "matrix_model":
            assert sim.smu.output_on is False
        else:
            assert not sim.matrix.closed
        assert all(transport._closed for transport in transports.values())
        first.close()
        assert_safe(sim)


def test_ctrl_c_during_the_safe_state_still_makes_every_instrument_safe(monkeypatch):
    import signal

    from drivers._transport import _SHIELD
    from sim import SimLab

    for served in serve("inproc", SimLab(SMALL, routing="matrix")):
        sim = served.lab
        config = LabConfig(sim=SMALL, instruments={
            "switch_matrix": {"uri": "sim://matrix", "model": "e5250a"}, "routing": "matrix"})
        transports = {role: served.open(name, timeout_s=TIMEOUT_S) for role, name in
                      (("switch_board", "board"), ("source_meter", "smu"), ("switch_matrix", "matrix"))}
        lab = build_lab(config, transports, min_resistance_ohm=2e3, sim=sim)
        lab.board.set_mask(0, 0, 1)
        lab.routing.connect(source_rows=[0], sense_cols=[0])
        lab.source_meter.set_source_voltage_v(0.1)
        lab.source_meter.output_on()
        assert sim.matrix.closed and sim.smu.output_on is True
        real_output_off = lab.source_meter.output_off

        def interrupted_output_off():
            _SHIELD._handle(signal.SIGINT, None)     # Ctrl-C between two instruments' steps
            real_output_off()

        monkeypatch.setattr(lab.source_meter, "output_off", interrupted_output_off)
        with pytest.raises(KeyboardInterrupt):
            lab.safe_state()
        assert not _SHIELD.pending and _SHIELD.depth == 0
        assert_safe(sim)
        assert not sim.matrix.closed
        monkeypatch.undo()
        lab.close()
