"""Calibration records: round trip, refusal of damaged files, flags."""

import numpy as np
import pytest

from calibration import (
    FLAG_EXCLUDE,
    FLAG_OPEN,
    FLAG_SHORT,
    FLAG_UNCERTAIN,
    CalibrationHeader,
    CalibrationOptions,
    CalibrationRecord,
    TwinParameters,
    flag_names,
)
from crossbar_ctl.core.errors import RecordError


def make_record(seed=0, shape=(3, 4, 5)):
    rng = np.random.default_rng(seed)
    g = rng.uniform(5e-5, 1.5e-4, shape)
    flags = np.zeros(shape, np.uint8)
    flags[0, 1, 2] = FLAG_OPEN
    flags[2, 3, 4] = FLAG_UNCERTAIN
    header = CalibrationHeader(rows=shape[0], cols=shape[1], branches=shape[2], method="readout",
                               options=CalibrationOptions(), read_voltage_v=0.5,
                               idn={"switch_board": "CROSSBAR-CTL,SB-1,0001,1.0"},
                               twin=TwinParameters(row_wire_resistance_ohm=0.5, col_wire_resistance_ohm=0.5,
                                                   sense_resistance_ohm=10.0), complete=True)
    return CalibrationRecord(header, {"conductance_s": g, "sigma_s": g * 1e-4, "flags": flags})


def test_round_trip(tmp_path):
    record = make_record()
    record.save(tmp_path / "cal.npz")
    loaded = CalibrationRecord.load(tmp_path / "cal.npz")
    assert loaded.header == record.header
    np.testing.assert_array_equal(loaded.conductance_s, record.conductance_s)
    np.testing.assert_array_equal(loaded.flags, record.flags)
    assert loaded.usable.sum() == record.flags.size - 1  # "uncertain" alone stays usable


def test_truncated_and_corrupt_records_are_refused(tmp_path):
    path = tmp_path / "cal.npz"
    make_record().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordError, match="truncated or corrupt"):
        CalibrationRecord.load(path)
    make_record().save(path)
    with np.load(path, allow_pickle=False) as npz:
        contents = {name: npz[name] for name in npz.files}
    contents["conductance_s"] = contents["conductance_s"] * 1.01
    np.savez(path, **contents)
    with pytest.raises(RecordError, match="checksum"):
        CalibrationRecord.load(path)


def test_shape_mismatch_is_refused():
    record = make_record()
    with pytest.raises(RecordError, match="shape"):
        CalibrationRecord(record.header, {**record.arrays, "flags": np.zeros((3, 4, 4), np.uint8)})
    with pytest.raises(RecordError, match="no 'sigma_s'"):
        CalibrationRecord(record.header, {"conductance_s": record.conductance_s, "flags": record.flags})


def test_flags_and_summary():
    assert flag_names(FLAG_OPEN | FLAG_SHORT) == ["open", "short"]
    assert FLAG_EXCLUDE & FLAG_UNCERTAIN == 0
    summary = make_record().summary()
    assert summary["branches"] == 60 and summary["flagged"] == 2
    assert summary["median_rel_sigma"] == pytest.approx(1e-4)


def test_options_are_strict():
    with pytest.raises(ValueError):
        CalibrationOptions(repeats=1)
    with pytest.raises(ValueError):
        CalibrationOptions(read_voltag_v=0.5)
