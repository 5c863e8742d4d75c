"""The lab configuration: strict, bounded, readable errors."""

import pytest
from hypothesis import given, strategies as st

from crossbar_ctl.core.config import LabConfig, Limits, SimArrayConfig, load_lab_config
from crossbar_ctl.core.errors import ConfigError


def test_default_is_a_simulated_lab():
    config = load_lab_config()
    assert config.sim is not None
    assert config.instruments.switch_board.uri.startswith("sim://")


def test_toml_round_trip(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text(
        """
        name = "bench-1"
        [limits]
        max_voltage_v = 0.5
        [sim]
        rows = 8
        cols = 6
        branches = 4
        faults = [{kind = "open_resistor", row = 1, col = 2, branch = 3}]
        """
    )
    config = load_lab_config(path)
    assert config.limits.max_voltage_v == 0.5
    assert (config.sim.rows, config.sim.cols, config.sim.branches) == (8, 6, 4)
    assert config.sim.faults[0].kind == "open_resistor"


def test_misspelt_key_is_refused_naming_it(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text("[limits]\nmax_voltage = 0.5\n")
    with pytest.raises(ConfigError, match=r"limits\.max_voltage"):
        load_lab_config(path)


def test_out_of_range_names_key_value_and_bound():
    with pytest.raises(ConfigError) as info:
        load_lab_config({"sim": {"rows": 0}})
    message = str(info.value)
    assert "sim.rows" in message and "= 0" in message and "greater than or equal to 1" in message
    assert info.value.key == "sim.rows"


def test_fault_outside_the_array_is_refused():
    with pytest.raises(ConfigError, match="outside"):
        load_lab_config({"sim": {"rows": 2, "faults": [{"kind": "open_resistor", "row": 5,
                                                        "col": 0, "branch": 0}]}})


def test_newer_schema_is_refused_with_advice():
    with pytest.raises(ConfigError, match="upgrade"):
        load_lab_config({"schema_version": 99})


def test_sim_uri_needs_a_sim_table():
    with pytest.raises(ConfigError, match=r"\[sim\]"):
        load_lab_config({"sim": None})


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="no such lab file"):
        load_lab_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_lab_config(bad)


def test_models_are_frozen():
    limits = Limits()
    with pytest.raises(Exception):
        limits.max_voltage_v = 100.0  # type: ignore[misc]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_voltage_limit_bounds(value):
    ok = 0 < value <= 200
    if ok:
        assert LabConfig.model_validate({"limits": {"max_voltage_v": value}}).limits.max_voltage_v == value
    else:
        with pytest.raises(ConfigError):
            load_lab_config({"limits": {"max_voltage_v": value}})


def test_sim_defaults_are_physical():
    sim = SimArrayConfig()
    assert sim.population.nominal_resistance_ohm > sim.switch_on_resistance_ohm > 0


@pytest.mark.parametrize("role, model", [("switch_board", "switchbored"), ("source_meter", "keithley2405"),
                                         ("switch_matrix", "switchboard")])
def test_unknown_models_are_refused_per_role_with_the_allowed_list(role, model):
    from crossbar_ctl.core.config import MODELS

    instruments = {role: {"uri": f"sim://{role}", "model": model}}
    with pytest.raises(ConfigError) as info:
        load_lab_config({"instruments": instruments})
    message = str(info.value)
    assert f"instruments.{role}.model = {model!r}" in message
    assert f"known models: {', '.join(MODELS[role])}" in message
    assert info.value.key == f"instruments.{role}.model"


def test_models_are_any_case_and_the_lists_match_the_drivers():
    from crossbar_ctl.core.config import MODELS
    from drivers._lab import SOURCE_METER_MODELS, SWITCH_MATRIX_MODELS

    config = load_lab_config({"instruments": {"source_meter": {"uri": "sim://smu", "model": "Keithley2400"},
                                              "switch_board": {"uri": "sim://board", "model": ""}}})
    assert config.instruments.source_meter.model == "keithley2400"  # what drivers and simulator expect
    assert config.instruments.switch_board.model == ""  # the role's default
    assert set(MODELS["source_meter"]) == set(SOURCE_METER_MODELS)
    assert set(MODELS["switch_matrix"]) == set(SWITCH_MATRIX_MODELS)
