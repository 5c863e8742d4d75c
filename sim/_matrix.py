"""A simulated Keysight E5250A / B2200-style low-leakage switch matrix (SCPI).

Channels are ``(@ciioo)``: card ``c``, two-digit input ``ii``, two-digit output ``oo``; a list
separates channels with ``,`` and a range ``a:b`` is the block of every input from ``ii(a)`` to
``ii(b)`` crossed with every output from ``oo(a)`` to ``oo(b)``. The simulated mainframe runs in
auto configuration mode (all cards as one, card number 0; ``ALL`` is accepted where the manual
allows it). Extension for big arrays: with more than 99 outputs the output field has three digits
(``ciiooo``).

In a lab, input 1 is the SMU's HI (force) terminal and input 2 its LO (sense) terminal; outputs
``1..rows`` are the array's rows and ``rows+1..rows+cols`` its columns.

Commands (``[:ROUTe]`` may be left out, as on the instrument):

==========================================  ===================================================
``:CLOSe[:LIST] (@list)`` / ``?``            connect channels / 1 or 0 per channel
``:OPEN[:LIST] (@list)`` / ``?``             disconnect channels / 1 or 0 per channel
``:OPEN:CARD 0|ALL``                         disconnect everything
``:CLOSe:CARD? 0``                           the closed channels, ``(@00101,00212)``, or ``(@)``
``:CONNection:RULE 0|ALL,FREE|SROUte`` / ?   FREE: any number of connections per port;
                                             SROUte: one output per input and one input per
                                             output, a new connection replacing the old one
``:CONNection:SEQuence 0|ALL,NSEQ|BBM|MBBR``  the switching sequence when SROUte replaces a
                                             connection (instantaneous here; kept for drivers)
``:AGND[:STATe] 0|ALL,ON|OFF`` / ``?``       B2200-style ground mode: every output connected to
                                             no input is tied to ground (the subset of the
                                             ``:AGND`` commands simulated: all outputs are
                                             ground-enabled, the ground unit is built in)
==========================================  ===================================================

``*RST``: every channel open, rule FREE, sequence BBM, ground mode OFF. Closing two inputs onto
one output in FREE mode is allowed, as on the instrument (which warns that it can damage it): in
a lab, HI and LO on one line short the SMU, which then sits at its current limit.
"""

from __future__ import annotations

import re
import threading

import numpy as np

from sim._scpi import Boolean, Choice, ScpiDevice, ScpiError, scpi

__all__ = ["INPUT_HI", "INPUT_LO", "SimSwitchMatrix"]

INPUT_HI = 1
"""The matrix input wired to the SMU's HI (force) terminal."""
INPUT_LO = 2
"""The matrix input wired to the SMU's LO (sense) terminal."""

_CHANNEL_LIST = re.compile(r"\(@\s*(.*?)\s*\)", re.S)


def _card(text: str) -> int:
    """The card parameter: 0 or ALL in auto configuration mode (1-4 would need normal mode)."""
    if text.upper() == "ALL" or text == "0":
        return 0
    raise ScpiError(-224)


class SimSwitchMatrix(ScpiDevice):
    """An E5250A-style switch matrix with ``outputs`` output ports and 10 input ports.

    Parameters
    ----------
    outputs : int
        Output ports (a lab uses ``rows + cols``).
    """

    idn = "Agilent Technologies,E5250A,0,B.01.06"
    INPUTS = 10

    def __init__(self, outputs: int, *, lock: threading.RLock | None = None, seed: int = 0) -> None:
        if outputs < 1:
            raise ValueError(f"outputs must be >= 1, got {outputs}")
        self.outputs = outputs
        self._output_digits = 2 if outputs <= 99 else 3
        super().__init__(lock=lock, seed=seed)

    def reset(self) -> None:
        self.closed: set[tuple[int, int]] = set()
        self.rule = "FREE"
        self.sequence = "BBM"
        self.ground = False
        self.version = getattr(self, "version", 0) + 1

    def terminals(self) -> tuple[np.ndarray, np.ndarray]:
        """Which outputs connect to HI and which to LO: two ``bool (outputs,)`` arrays."""
        hi = np.zeros(self.outputs, dtype=bool)
        lo = np.zeros(self.outputs, dtype=bool)
        for inp, out in self.closed:
            if inp == INPUT_HI:
                hi[out - 1] = True
            elif inp == INPUT_LO:
                lo[out - 1] = True
        return hi, lo

    def connected_outputs(self) -> np.ndarray:
        """``bool (outputs,)``: outputs connected to any input."""
        used = np.zeros(self.outputs, dtype=bool)
        for _, out in self.closed:
            used[out - 1] = True
        return used

    # ---- channel lists -----------------------------------------------------------------------
    def _channel(self, text: str) -> tuple[int, int]:
        digits = text.strip()
        if not digits.isdigit():
            raise ScpiError(-102)
        if len(digits) != 3 + self._output_digits:
            raise ScpiError(-224)
        _card(digits[0])
        inp, out = int(digits[1:3]), int(digits[3:])
        if not (1 <= inp <= self.INPUTS and 1 <= out <= self.outputs):
            raise ScpiError(-222)
        return inp, out

    def channels(self, text: str) -> list[tuple[int, int]]:
        """Parse ``(@...)`` into (input, output) pairs, in order; SCPI errors as the instrument.

        Ranges that expand to more channels than the matrix has are -223 Too much data, so one
        line cannot expand into millions of pairs.
        """
        match = _CHANNEL_LIST.fullmatch(text.strip())
        if match is None:
            raise ScpiError(-104)
        if not match.group(1):
            return []
        pairs = []
        for item in match.group(1).split(","):
            first, sep, last = item.partition(":")
            a = self._channel(first)
            if not sep:
                pairs.append(a)
                continue
            b = self._channel(last)
            if a[0] > b[0] or a[1] > b[1]:
                raise ScpiError(-222)
            pairs.extend((i, o) for i in range(a[0], b[0] + 1) for o in range(a[1], b[1] + 1))
            if len(pairs) > self.INPUTS * self.outputs:  # only repeats make a list this long
                raise ScpiError(-223)
        return pairs

    def _name(self, channel: tuple[int, int]) -> str:
        return f"0{channel[0]:02d}{channel[1]:0{self._output_digits}d}"

    # ---- routing -----------------------------------------------------------------------------
    @scpi("[:ROUTe]:CLOSe[:LIST]", str)
    def _close(self, text: str) -> None:
        for inp, out in self.channels(text):
            if self.rule == "SROU":
                self.closed = {(i, o) for i, o in self.closed if i != inp and o != out}
            self.closed.add((inp, out))
        self.version += 1

    @scpi("[:ROUTe]:OPEN[:LIST]", str)
    def _open(self, text: str) -> None:
        self.closed.difference_update(self.channels(text))
        self.version += 1

    @scpi("[:ROUTe]:CLOSe[:LIST]?", str)
    def _close_query(self, text: str) -> str:
        return ",".join("1" if pair in self.closed else "0" for pair in self.channels(text))

    @scpi("[:ROUTe]:OPEN[:LIST]?", str)
    def _open_query(self, text: str) -> str:
        return ",".join("0" if pair in self.closed else "1" for pair in self.channels(text))

    @scpi("[:ROUTe]:OPEN:CARD", _card)
    def _open_card(self, card: int) -> None:
        self.closed.clear()
        self.version += 1

    @scpi("[:ROUTe]:CLOSe:CARD?", _card)
    def _closed_card(self, card: int) -> str:
        return "(@" + ",".join(self._name(pair) for pair in sorted(self.closed)) + ")"

    @scpi("[:ROUTe]:CONNection:RULE", _card, Choice("FREE", "SROUte"))
    def _rule(self, card: int, rule: str) -> None:
        self.rule = rule

    @scpi("[:ROUTe]:CONNection:RULE?", _card)
    def _rule_query(self, card: int) -> str:
        return self.rule

    @scpi("[:ROUTe]:CONNection:SEQuence", _card, Choice("NSEQ", "BBM", "MBBR"))
    def _sequence(self, card: int, sequence: str) -> None:
        self.sequence = sequence

    @scpi("[:ROUTe]:CONNection:SEQuence?", _card)
    def _sequence_query(self, card: int) -> str:
        return self.sequence

    @scpi("[:ROUTe]:AGND[:STATe]", _card, Boolean())
    def _ground(self, card: int, on: bool) -> None:
        self.ground = on
        self.version += 1

    @scpi("[:ROUTe]:AGND[:STATe]?", _card)
    def _ground_query(self, card: int) -> str:
        return "1" if self.ground else "0"
