"""The lab factory: open_lab on a fresh machine, from files and dicts, over the real pyvisa stack."""

import json
import socket

import numpy as np
import pytest

from crossbar_ctl.cli._main import main
from crossbar_ctl._lab import min_resistance_ohm, open_lab
from crossbar_ctl.core.config import LabConfig, SimArrayConfig
from crossbar_ctl.core.errors import ConfigError, ProtocolError
from drivers import BoardReadout, Keithley2400, KeysightE5250A, SuperpositionReadout

SMALL = {"rows": 4, "cols": 3, "branches": 4, "seed": 11}


def test_default_lab_opens_and_is_left_safe():
    with open_lab() as lab:
        assert lab.geometry == (64, 64, 8)
        assert isinstance(lab.readout, BoardReadout)
        assert set(lab.idn()) == {"switch_board", "source_meter"}
        lab.board.set_mask(0, 0, 0xFF)
        lab.routing.connect(source_rows=[0], sense_cols=[0])
        lab.source_meter.set_source_voltage_v(0.1)
        lab.source_meter.output_on()
        sim = lab.sim
    assert not sim.array.masks.any() and sim.smu.output_on is False
    assert (sim.board.row_routes == "GND").all()


def test_lab_from_a_dict_with_a_2400_a_matrix_and_no_board_readout():
    config = {
        "sim": {**SMALL, "has_readout": False, "profile": "ideal"},  # ideal board: reads the truth exactly
        "instruments": {
            "source_meter": {"uri": "sim://smu", "model": "keithley2400"},
            "switch_matrix": {"uri": "sim://matrix", "model": "e5250a"},
            "routing": "matrix",
        },
    }
    with open_lab(config) as lab:
        assert isinstance(lab.source_meter, Keithley2400)
        assert isinstance(lab.matrix, KeysightE5250A)
        assert isinstance(lab.readout, SuperpositionReadout)
        lab.board.load_masks(np.full((4, 3), 0b0011))
        voltage = np.array([0.1, -0.05, 0.0, 0.2])
        current = lab.readout.mvm(voltage)
        circuit = lab.sim.array.circuit(np.ones(4, bool), np.ones(3, bool))
        exact = circuit.solve(voltage).col_current_a[0]     # every line held at 0 V but the driven
        np.testing.assert_allclose(current[0], exact, rtol=3e-3)
        matrix = lab.sim.matrix
    assert not matrix.closed


def test_lab_file(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('name = "bench"\n[sim]\nrows = 4\ncols = 3\nbranches = 4\n', encoding="utf-8")
    with open_lab(path) as lab:
        assert lab.config.name == "bench" and lab.geometry == (4, 3, 4)


def test_bad_configurations_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        open_lab(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="model"):
        open_lab({"sim": SMALL, "instruments": {"source_meter": {"uri": "sim://smu", "model": "hp4156"}}})
    with pytest.raises(ConfigError, match="sim://nothing"):
        open_lab({"sim": SMALL, "instruments": {"switch_board": {"uri": "sim://nothing"}}})


def test_a_wrong_instrument_at_an_address_is_refused():
    config = {"sim": SMALL, "instruments": {"source_meter": {"uri": "sim://matrix", "model": "keithley2450"}}}
    with pytest.raises(ProtocolError, match="identifies as"):
        open_lab(config)


def test_2450_in_tsp_mode_is_refused_with_the_fix():
    from sim import SimLab

    sim = SimLab(SimArrayConfig(**SMALL), language="TSP")
    with pytest.raises(ProtocolError, match=r"\*LANG SCPI"):
        open_lab({"sim": SMALL}, sim=sim)


def test_min_resistance_follows_the_declared_population():
    assert min_resistance_ohm(None) == 1e3
    uniform = SimArrayConfig(population={"kind": "uniform", "nominal_resistance_ohm": 1e4, "spread": 0.3},
                             switch_on_resistance_ohm=0)
    assert min_resistance_ohm(uniform) == pytest.approx(7e3)
    lognormal = SimArrayConfig(population={"kind": "lognormal", "nominal_resistance_ohm": 1e4, "spread": 0.2})
    sim_lab_min = 1 / open_lab({"sim": {**SMALL, "population": {"spread": 0.2}}}).sim.array.branch_conductance_s().max()
    assert min_resistance_ohm(lognormal) < sim_lab_min


def test_end_to_end_one_branch_through_pyvisa_against_the_served_lab():
    """The issue's 'done when': measure one branch through the real pyvisa stack (TCP) and the
    pty (pyserial), and compare with the simulator's truth."""
    from sim import LabServer, SimLab

    sim = SimLab(SimArrayConfig(**SMALL))
    with LabServer(sim) as server:
        uris = server.lab_uris()
        config = LabConfig.model_validate({"sim": SMALL, "instruments": {
            "switch_board": {"uri": uris["board"], "model": "switchboard"},
            "source_meter": {"uri": uris["smu"], "model": "keithley2450"}}})
        assert config.instruments.source_meter.uri.startswith("visa://TCPIP0::127.0.0.1::")
        with open_lab(config, sim=sim) as lab:
            smu = lab.source_meter
            smu.reset()
            smu.set_compliance_current_a(1e-3)
            lab.board.safe()
            lab.board.set_mask(3, 1, 1 << 2)
            lab.routing.connect(source_rows=[3], sense_cols=[1])
            smu.set_source_voltage_v(0.2)
            smu.output_on()
            measured_s = smu.measure_current_a() / 0.2
            truth_s = lab.sim.array.branch_conductance_s()[3, 1, 2]
            assert measured_s == pytest.approx(truth_s, rel=5e-3)
    assert not sim.array.masks.any() and sim.smu.output_on is False


def test_cli_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 64 and info["simulated"] is True
    assert "MODEL 2450" in info["idn"]["source_meter"]
    assert info["limits"]["max_voltage_v"] == 1.0


def test_cli_info_bad_file_is_one_line(tmp_path, capsys):
    assert main(["info", "--lab", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crossbar: error:") and err.count("\n") == 1


def test_cli_bench_io_json(capsys):
    assert main(["bench", "io", "--single", "20", "--sweeps", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["transport"], r["mode"]) for r in rows} == {
        ("in-process", "single"), ("in-process", "list"), ("tcp (pyvisa @py)", "single"), ("tcp (pyvisa @py)", "list")}
    assert all(r["readings_per_s"] > 0 for r in rows)
    # every figure against the reference of this run: the simulated instrument's own time per reading
    by = {(r["transport"], r["mode"]): r for r in rows}
    for mode in ("single", "list"):
        local = by["in-process", mode]
        assert local["x_sim_device"] == pytest.approx(local["us_per_reading"] / local["sim_us_per_reading"])
        assert local["controller_x_sim_device"] == pytest.approx(
            local["controller_us_per_reading"] / local["sim_us_per_reading"])
        assert by["tcp (pyvisa @py)", mode]["x_sim_device"] > 0
    # a list sweep spreads the controller's per-exchange cost over its points
    assert by["in-process", "list"]["controller_us_per_reading"] < by["in-process", "single"]["controller_us_per_reading"]


def test_served_lab_goes_through_pyvisa_and_pyserial_and_stops_its_servers():
    config = {"sim": {"rows": 4, "cols": 4, "branches": 2}}
    with open_lab(config, served=True) as lab:
        assert lab.board.transport.address.startswith("serial://")
        assert lab.source_meter.transport.address.startswith("visa://TCPIP0::127.0.0.1::")
        lab.board.set_mask(1, 2, 0b01)
        assert lab.board.get_mask(1, 2) == 0b01
        assert lab.sim.array.masks[1, 2] == 0b01
        port = int(lab.source_meter.transport.address.split("::")[2])

    with pytest.raises(OSError):  # the server is gone with the lab
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_lab_file_pointing_at_a_served_lab_sweeps_within_the_readmes_timeout():
    from sim import LabServer, SimLab

    with LabServer(SimLab(SimArrayConfig(rows=4, cols=4, branches=2))) as server:
        uris = {name: f"visa://{resource}" for name, resource in server.uris.items()}
        config = {"sim": None, "instruments": {
            "switch_board": {"uri": uris["board"], "model": "switchboard", "timeout_s": 2.0},
            "source_meter": {"uri": uris["smu"], "model": "keithley2450", "timeout_s": 2.0}}}
        with open_lab(config) as lab:  # as a user's lab file against `crossbar sim serve`
            smu = lab.source_meter
            lab.board.set_mask(0, 0, 1)
            lab.routing.connect(source_rows=[0], sense_cols=[0])
            smu.set_nplc(1.0)
            assert np.all(smu.sweep_voltages_v(np.full(4, 0.1)) > 0)
            assert smu.transport.timeout_s == 2.0
            # each command leaves at once: a sweep's writes are not held back for delayed ACKs
            # (a 4-point sweep took 88 ms with Nagle's algorithm on, 2 ms without)
            sock = smu.transport._socket()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_served_needs_simulated_instruments():
    config = {"sim": None, "instruments": {"switch_board": {"uri": "serial://loop://"},
                                            "source_meter": None}}
    with pytest.raises(ConfigError, match="served"):
        open_lab(config, served=True)
