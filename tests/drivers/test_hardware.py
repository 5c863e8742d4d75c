"""Opt-in tests against real instruments: ``pytest --instrument-uri visa://... --instrument-uri serial://...``.

They only identify the instrument, configure it, read at 0 V with the output off, and leave it
safe: nothing is applied to a device under test.
"""

import math

import pytest

from drivers import Keithley2400, Keithley2450, KeysightE5250A, SwitchBoard, open_transport

pytestmark = pytest.mark.hardware


def _drivers(request):
    for uri in request.config.getoption("--instrument-uri"):
        transport = open_transport(uri, timeout_s=5.0)
        idn = transport.query("*IDN?")
        yield uri, transport, idn


def test_each_instrument_identifies_configures_and_ends_safe(request):
    for uri, transport, idn in _drivers(request):
        try:
            if "MODEL 2450" in idn:
                smu = Keithley2450(transport)
            elif "MODEL 24" in idn:
                smu = Keithley2400(transport)
            elif "E5250A" in idn or "B220" in idn:
                matrix = KeysightE5250A(transport)
                matrix.open_all()
                assert matrix.closed_channels() == set()
                matrix.check_errors()
                continue
            else:
                board = SwitchBoard(transport)
                rows, cols, branches = board.geometry()
                assert rows > 0 and cols > 0 and branches > 0
                board.safe()
                assert board.get_mask(0, 0) == 0
                assert board.errors() == []
                continue
            smu.reset()
            smu.set_nplc(1)
            smu.set_compliance_current_a(1e-6)
            reading = smu.measure_current_a()
            assert math.isnan(reading) or abs(reading) < 1e-6
            assert not smu.in_compliance()
            smu.output_off()
            smu.check_errors()
        finally:
            transport.close()
