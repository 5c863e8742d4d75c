"""The board's difference channels (issue 12): ``CAP?`` lists ``DIFF``, ``MVMD`` reads each column
pair's difference through a channel with its own gain, offset and common-mode leakage, and the
driver and readout use it. The thresholds come from the channel's definition (docs/simulator.md,
docs/switchboard-protocol.md), with about 20 % for finite samples."""

from __future__ import annotations

import numpy as np
import pytest

from crossbar_ctl._lab import open_lab
from crossbar_ctl.core.config import SimArrayConfig
from crossbar_ctl.core.errors import InstrumentReportedError, LimitError
from sim._array import PhysicalArray
from sim._board import SimSwitchBoard


def _ask(board: SimSwitchBoard, line: str) -> str:
    return board.feed(line.encode("ascii") + b"\n").decode("ascii").strip()


def _board(readout: dict, **config) -> SimSwitchBoard:
    settings = dict(profile="ideal", rows=4, cols=8, branches=4, seed=3, drift_per_hour=0.0, tcr_per_k=0.0,
                    physics={"readout": readout})
    settings.update(config)
    board = SimSwitchBoard(PhysicalArray(SimArrayConfig(**settings)))
    masks = np.full((4, 8), 0b1111, dtype=np.uint64)
    masks[:, 1::2] = 0b0111  # each pair: a common mode about 7 times its difference
    board.array.set_masks(masks)
    return board


def test_capability_and_refusals():
    assert _ask(_board({"differential": True}), "CAP?") == "OK MVM DIFF BATCH"
    plain = _board({})
    assert _ask(plain, "CAP?") == "OK MVM BATCH"
    assert _ask(plain, "MVMD 0,0,0,0").startswith("ERR 6")
    board = _board({"differential": True})
    assert _ask(board, "MVMD 0,0,0").startswith("ERR 2")  # 3 voltages for 4 rows
    assert _ask(board, "MVMD 0,0,0,5").startswith("ERR 7")  # above DACMAX?
    assert len(_ask(board, "MVMD 0.1,0.1,0.1,0.1")[3:].split(",")) == 4  # cols / 2


def test_an_ideal_channel_reads_the_pairs_difference():
    board = _board({"differential": True}, relative_noise=0.0, noise_floor_fraction=0.0, adc_bits=32)
    voltage = np.array([0.2, -0.1, 0.3, 0.05])
    current = board.array.circuit().solve(voltage).col_current_a[0]
    assert np.allclose(board.read_pairs(voltage), current[0::2] - current[1::2], rtol=1e-7, atol=1e-15)


def test_gain_offset_and_leakage_are_the_channels_own():
    physics = {"differential": True, "diff_gain_error": 1e-2, "diff_offset_fraction": 1e-3, "diff_cmrr_db": 40.0}
    board = _board(physics, relative_noise=0.0, noise_floor_fraction=0.0, adc_bits=32)
    voltage = np.full(4, 0.25)
    current = board.array.circuit().solve(voltage).col_current_a[0]
    plus, minus = current[0::2], current[1::2]
    expected = (board.diff_gain * (plus - minus) + board.diff_leak * (plus + minus) / 2
                + board.diff_offset_fraction * board.adc_range_a)
    assert np.allclose(board.read_pairs(voltage), expected, rtol=0, atol=1e-12)  # one 32-bit LSB
    assert np.all(np.abs(board.diff_leak) < 5 * 10 ** (-40 / 20)) and np.any(board.diff_leak != 0)
    # the column channels keep their own draws: the difference channels come from their own stream
    assert np.array_equal(board.channel_gain, _board({}).channel_gain)


def test_the_difference_channel_sheds_the_common_modes_read_noise():
    # the mechanism (issue 12): the relative read noise scales with what the ADC converts, so a
    # pair with a common mode ~7x its difference reads its difference with much less noise
    board = _board({"differential": True}, relative_noise=1e-3, noise_floor_fraction=1e-7)
    voltage = np.full(4, 0.25)
    separate = np.array([board.read_columns(voltage) for _ in range(400)])
    single = separate[:, 0::2] - separate[:, 1::2]
    pairs = np.array([board.read_pairs(voltage) for _ in range(400)])
    current = board.array.circuit().solve(voltage).col_current_a[0]
    plus, minus = current[0::2], current[1::2]
    # expected sd ratio: sqrt(I+^2 + I-^2) / |I+ - I-| (relative noise on each column vs on the difference)
    ratio = np.sqrt(plus**2 + minus**2) / np.abs(plus - minus)
    assert np.median(np.std(single, axis=0) / np.std(pairs, axis=0)) == pytest.approx(np.median(ratio), rel=0.2)


def test_driver_and_readout_use_the_channels_and_refuse_without_them():
    with open_lab({"sim": {"rows": 4, "cols": 6, "branches": 3, "seed": 2, "profile": "pcb"}}) as lab:
        assert lab.board.has_differential and lab.readout.differential
        lab.board.load_masks(np.full((4, 6), 0b011, dtype=np.uint64))
        pairs = lab.readout.mvm_pairs(np.full((2, 4), 0.2))
        assert pairs.shape == (2, 3)
        truth = np.full(4, 0.2) @ lab.truth.transfer_s()
        assert np.allclose(pairs, truth[0::2] - truth[1::2], rtol=0.05, atol=2e-8)
    with open_lab({"sim": {"rows": 4, "cols": 6, "branches": 3, "seed": 2, "profile": "ideal"}}) as lab:
        assert not lab.board.has_differential and not lab.readout.differential
        sent = lab.board.transport.round_trips
        with pytest.raises(LimitError, match="DIFF"):
            lab.board.mvm_pairs(np.zeros(4))
        assert lab.board.transport.round_trips == sent  # refused before any byte left
        # without difference channels mvm_pairs is the difference of the columns' readings
        assert lab.readout.mvm_pairs(np.zeros((1, 4))).shape == (1, 3)
        with pytest.raises(InstrumentReportedError):
            lab.board._command("MVMD 0,0,0,0")
