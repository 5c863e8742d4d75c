"""Column channel gains against the source-meter (calibration._gains, issue 12's readout floor)."""

import numpy as np

import calibration._gains as gains
from calibration import calibrate
from crossbar_ctl._lab import open_lab


def _gain_error(monkeypatch, board_repeats):
    """rms over columns of the measured relative gains against the board's true channel gains."""
    monkeypatch.setattr(gains, "BOARD_REPEATS", board_repeats)
    with open_lab({"sim": {"rows": 8, "cols": 8, "branches": 4, "profile": "pcb", "seed": 2}}) as lab:
        record = calibrate(lab)
        channel = lab.sim.devices["board"].channel_gain
    ratio = np.asarray(record.twin.column_gain) / channel
    return float(np.std(ratio / ratio.mean()))


def test_the_board_read_longer_than_the_source_meter_sharpens_the_gains(monkeypatch):
    """The board reads every column in one vector, so its side of each ratio is read 8 times as often
    as the source-meter's (per column) for little time: the gains' column-to-column error falls from
    3.4e-5 to 1.5e-5 on this 8x8x4 pcb board (2.44e-5 to 1.81e-5 on the demo's, whose readout floor
    rose 0.5 bit). A pair's two columns are told apart by it: the readout's systematic error."""
    default = gains.BOARD_REPEATS
    assert default >= 8
    once = _gain_error(monkeypatch, 1)
    longer = _gain_error(monkeypatch, default)
    assert longer < 0.6 * once
    assert longer < 1.8e-5
