"""The exception hierarchy: one root, built-ins mixed in, data carried."""

import subprocess
import sys

from crossbar_ctl.core import errors


def test_one_root_and_builtin_mixins():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.CrossbarError)
    assert issubclass(errors.LimitError, ValueError)
    assert issubclass(errors.InstrumentTimeout, TimeoutError)
    assert issubclass(errors.ConnectionLost, ConnectionError)


def test_errors_carry_data():
    exc = errors.LimitError("max_voltage_v", 5.0, 1.0)
    assert (exc.limit, exc.requested, exc.allowed) == ("max_voltage_v", 5.0, 1.0)
    assert "requested 5" in str(exc)
    exc = errors.InstrumentReportedError(-222, "Data out of range", address="sim://smu",
                                         command=":SOUR:VOLT 300")
    assert exc.code == -222 and "sim://smu" in str(exc) and ":SOUR:VOLT 300" in str(exc)


def test_leaves_import_nothing_heavy():
    code = ("import sys, crossbar_ctl.core.errors, crossbar_ctl.core.config, crossbar_ctl.core.files, crossbar_ctl.core.circuit; "
            "heavy = [m for m in ('numba', 'pyvisa', 'serial', 'sim', 'drivers', 'calibration') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_resolves_lazily():
    import crossbar_ctl

    code = ("import sys, crossbar_ctl; assert 'numba' not in sys.modules; "
            "crossbar_ctl.solve_subset_sum; assert 'numba' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in crossbar_ctl.__all__:
        assert getattr(crossbar_ctl, name) is not None
