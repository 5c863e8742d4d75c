"""The simulated switch board: docs/switchboard-protocol.md, byte for byte.

The board holds the branch masks of every cell (they are the physical array's commanded masks)
and the route of every line; a board with readout (``CAP?`` lists ``MVM``) also drives every row
from a DAC and senses every column with an ADC, through the exact circuit of the array.
"""

from __future__ import annotations

import binascii
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from sim._keithley import OVERFLOW
from sim._scpi import LineDevice

__all__ = ["BOARD_ERRORS", "SimSwitchBoard", "crc16"]

BOARD_ERRORS = {
    1: "unknown command",
    2: "bad argument",
    3: "out of range",
    4: "line too long",
    5: "checksum mismatch",
    6: "not supported",
    7: "unsafe",
    8: "hardware fault",
}

ROW_ROUTES = ("SRC", "GND", "FLOAT")
COL_ROUTES = ("SENSE", "GND", "FLOAT")

_DECIMAL = re.compile(r"\d{1,9}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_CRC = re.compile(r"[0-9A-Fa-f]{4}")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def crc16(text: str) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of ASCII text, as ``LOAD`` and ``ROW?`` use."""
    return binascii.crc_hqx(text.encode("ascii"), 0xFFFF)


class _Refused(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(BOARD_ERRORS[code])
        self.code = code


def _number(text: str) -> float:
    if _NUMBER.fullmatch(text) is None:
        raise _Refused(2)
    return float(text)


class SimSwitchBoard(LineDevice):
    """The project's switch board on a serial line, backed by a physical array.

    Parameters
    ----------
    array : PhysicalArray
        The array whose switches the board drives (masks, temperature, circuit, noise, time).
    advance_time : callable, optional
        How the board lets simulated time pass (default ``array.advance_time``).
    """

    idn = "CROSSBAR-CTL,SB-1,0001,1.0"
    ERROR_QUEUE_SIZE = 16

    def __init__(self, array: Any, *, advance_time: Callable[[float], None] | None = None,
                 lock: threading.RLock | None = None, seed: int = 0) -> None:
        super().__init__(lock=lock, seed=seed)
        self.array = array
        self._advance_time = advance_time or array.advance_time
        config = array.config
        self.rows, self.cols, self.branches = config.rows, config.cols, config.branches
        self.has_readout = config.has_readout
        self.dac_max_v = config.dac_max_voltage_v
        self.adc_range_a = config.adc_range_a
        self.adc_bits = config.adc_bits
        self.adc_nplc = 1.0
        self.errors: deque[int] = deque()
        self._commands: dict[str, Callable[[list[str]], str | None]] = {
            "*IDN?": self._idn, "*RST": self._rst, "*CLS": self._cls, "GEOM?": self._geom,
            "CAP?": self._cap, "SET": self._set, "GET?": self._get, "LOAD": self._load,
            "ROW?": self._row, "ROUTE": self._route, "ROUTE?": self._route_query,
            "SAFE": self._safe, "TEMP?": self._temp, "ERR?": self._err,
            "DACMAX?": self._dacmax, "ADCRANGE": self._adcrange, "ADCRANGE?": self._adcrange_query,
            "ADCNPLC": self._adcnplc, "ADCNPLC?": self._adcnplc_query, "MVM": self._mvm,
        }
        self._readout = {"DACMAX?", "ADCRANGE", "ADCRANGE?", "ADCNPLC", "ADCNPLC?", "MVM"}
        self.row_routes = np.full(self.rows, "GND", dtype="<U5")
        self.col_routes = np.full(self.cols, "GND", dtype="<U5")
        self.version = 0

    # ---- framing -----------------------------------------------------------------------------
    def _execute(self, line: bytes) -> bytes:
        if not line:
            return b""
        try:
            if any(byte < 0x20 or byte > 0x7E for byte in line):
                raise _Refused(2)
            tokens = line.decode("ascii").split(" ")
            if not all(tokens):
                raise _Refused(2)
            handler = self._commands.get(tokens[0].upper())
            if handler is None:
                raise _Refused(1)
            if not self.has_readout and tokens[0].upper() in self._readout:
                raise _Refused(6)
            payload = handler(tokens[1:])
        except _Refused as exc:
            return self._refuse(exc.code)
        return f"OK {payload}\n".encode("ascii") if payload else b"OK\n"

    def _refuse(self, code: int) -> bytes:
        if len(self.errors) < self.ERROR_QUEUE_SIZE:
            self.errors.append(code)
        return f"ERR {code} {BOARD_ERRORS[code]}\n".encode("ascii")

    def _too_long(self) -> bytes:
        return self._refuse(4)

    def _hardware_error(self) -> bytes:
        return self._refuse(8)

    # ---- argument parsing --------------------------------------------------------------------
    @staticmethod
    def _count(args: list[str], count: int) -> None:
        if len(args) != count:
            raise _Refused(2)

    @staticmethod
    def _index(text: str, size: int) -> int:
        if _DECIMAL.fullmatch(text) is None:
            raise _Refused(3 if text.isdigit() else 2)
        value = int(text)
        if value >= size:
            raise _Refused(3)
        return value

    def _mask(self, text: str) -> int:
        if _HEX.fullmatch(text) is None:
            raise _Refused(2)
        value = int(text, 16)
        if value >> self.branches:
            raise _Refused(3)
        return value

    def _lines(self, text: str, size: int) -> slice | int:
        return slice(None) if text == "*" else self._index(text, size)

    # ---- identification and status -----------------------------------------------------------
    def _idn(self, args: list[str]) -> str:
        self._count(args, 0)
        return self.idn

    def _rst(self, args: list[str]) -> None:
        self._safe(args)
        self.errors.clear()

    def _cls(self, args: list[str]) -> None:
        self._count(args, 0)
        self.errors.clear()

    def _geom(self, args: list[str]) -> str:
        self._count(args, 0)
        return f"{self.rows} {self.cols} {self.branches}"

    def _cap(self, args: list[str]) -> str:
        self._count(args, 0)
        return "MVM" if self.has_readout else ""

    def _temp(self, args: list[str]) -> str:
        self._count(args, 0)
        return f"{self.array.temperature_c:.2f}"

    def _err(self, args: list[str]) -> str:
        self._count(args, 0)
        code = self.errors.popleft() if self.errors else 0
        return f"{code} {BOARD_ERRORS.get(code, 'No error')}"

    # ---- branch masks ------------------------------------------------------------------------
    def _set(self, args: list[str]) -> None:
        self._count(args, 3)
        row, col = self._index(args[0], self.rows), self._index(args[1], self.cols)
        self.array.set_mask(row, col, self._mask(args[2]))

    def _get(self, args: list[str]) -> str:
        self._count(args, 2)
        row, col = self._index(args[0], self.rows), self._index(args[1], self.cols)
        return f"{int(self.array.masks[row, col]):x}"

    def _load(self, args: list[str]) -> None:
        self._count(args, 3)
        if _CRC.fullmatch(args[2]) is None:
            raise _Refused(2)
        if crc16(args[1]) != int(args[2], 16):
            raise _Refused(5)
        row = self._index(args[0], self.rows)
        items = args[1].split(",")
        if len(items) != self.cols:
            raise _Refused(2)
        masks = np.array([self._mask(item) for item in items], dtype=np.uint64)
        self.array.set_row_masks(row, masks)

    def _row(self, args: list[str]) -> str:
        self._count(args, 1)
        row = self._index(args[0], self.rows)
        text = ",".join(f"{int(mask):x}" for mask in self.array.masks[row])
        return f"{text} {crc16(text):04x}"

    # ---- routing -----------------------------------------------------------------------------
    def _route(self, args: list[str]) -> None:
        self._count(args, 3)
        kind, target, mode = args[0].upper(), args[1], args[2].upper()
        if kind == "ROW":
            lines, allowed, routes = self._lines(target, self.rows), ROW_ROUTES, self.row_routes
        elif kind == "COL":
            lines, allowed, routes = self._lines(target, self.cols), COL_ROUTES, self.col_routes
        else:
            raise _Refused(2)
        if mode not in allowed:
            raise _Refused(3)
        routes[lines] = mode
        self.version += 1

    def _route_query(self, args: list[str]) -> str:
        self._count(args, 2)
        kind = args[0].upper()
        if kind == "ROW":
            return str(self.row_routes[self._index(args[1], self.rows)])
        if kind == "COL":
            return str(self.col_routes[self._index(args[1], self.cols)])
        raise _Refused(2)

    def _safe(self, args: list[str]) -> None:
        self._count(args, 0)
        for row in range(self.rows):
            self.array.set_row_masks(row, np.zeros(self.cols, dtype=np.uint64))
        self.row_routes[:] = "GND"
        self.col_routes[:] = "GND"
        self.version += 1

    # ---- readout -----------------------------------------------------------------------------
    def _dacmax(self, args: list[str]) -> str:
        self._count(args, 0)
        return f"{self.dac_max_v:g}"

    def _adcrange(self, args: list[str]) -> None:
        self._count(args, 1)
        value = _number(args[0])
        if not 1e-12 <= value <= 1.0:
            raise _Refused(3)
        self.adc_range_a = value

    def _adcrange_query(self, args: list[str]) -> str:
        self._count(args, 0)
        return f"{self.adc_range_a:g}"

    def _adcnplc(self, args: list[str]) -> None:
        self._count(args, 1)
        value = _number(args[0])
        if not 0.01 <= value <= 10:
            raise _Refused(3)
        self.adc_nplc = value

    def _adcnplc_query(self, args: list[str]) -> str:
        self._count(args, 0)
        return f"{self.adc_nplc:g}"

    def _mvm(self, args: list[str]) -> str:
        self._count(args, 1)
        items = args[0].split(",")
        if len(items) != self.rows:
            raise _Refused(2)
        voltage_v = np.array([_number(item) for item in items])
        if np.any(np.abs(voltage_v) > self.dac_max_v):
            raise _Refused(7)
        return ",".join(f"{value:.9e}" for value in self.read_columns(voltage_v))

    def read_columns(self, voltage_v: np.ndarray) -> np.ndarray:
        """Drive every row, sense every column: ADC readings (A) as the board reports them."""
        circuit = self.array.circuit(np.ones(self.rows, bool), np.ones(self.cols, bool))
        current_a = circuit.solve(voltage_v).col_current_a[0]
        current_a = self.array.read_noise(current_a, self.adc_range_a, self.adc_nplc)
        self._advance_time(self.adc_nplc / 60)
        lsb = 2 * self.adc_range_a / 2.0**self.adc_bits
        reading = np.round(current_a / lsb) * lsb + 0.0  # + 0.0: no "-0.0" on the wire
        return np.where(np.abs(current_a) > self.adc_range_a, OVERFLOW, reading)
