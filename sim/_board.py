"""The simulated switch board: docs/switchboard-protocol.md, byte for byte.

The board holds the branch masks of every cell (they are the physical array's commanded masks)
and the route of every line; a board with readout (``CAP?`` lists ``MVM``) also drives every row
from a DAC and senses every column with an ADC, through the exact circuit of the array.

The converters carry the array's readout physics (``sim/_physics.py``, docs/simulator.md): the
row DACs apply codes (``dac_bits`` over +-``DACMAX?``, reported by ``DACBITS?``, with an INL bow),
not the text's value;
each column channel has its own gain, offset and offset drift (one draw per board from the
``readout`` stream); the ADC adds an INL bow and code-width errors (DNL) before it reports a code.
A board with difference channels (``differential`` physics; ``CAP?`` lists ``DIFF``) also reads
each column pair's difference through its own channel (``MVMD``): gain, offset and common-mode
leakage of its own (the ``readout-diff`` stream), the same ADC.
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
from sim._physics import physics_rng
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


def _bow(x: np.ndarray) -> np.ndarray:
    """The endpoint-fit INL bow of an offset-binary converter at ``x`` = signal / full scale.

    ``1 - x**2``: 0 at both ends of the range, 1 at mid-scale (0 V, 0 A).
    """
    return 1.0 - x * x


def _unit_hash(codes: np.ndarray, key: int) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) for each integer code (splitmix64 finaliser)."""
    z = np.atleast_1d(codes).astype(np.int64).view(np.uint64) ^ np.uint64(key)
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


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
        self.readout_physics = array.physics.readout
        self.reference_temperature_c = config.reference_temperature_c
        # Per column: gain, offset and offset drift (fractions of the ADC range, per K); the key
        # of the ADC's code-width errors. One draw per board, from the readout's own stream.
        draw = physics_rng(config.seed, "readout")
        readout, cols = self.readout_physics, self.cols
        self.channel_gain = 1.0 + readout.gain_error * draw.standard_normal(cols)
        self.channel_offset_fraction = readout.offset_fraction * draw.standard_normal(cols)
        self.channel_offset_drift_per_k = (readout.offset_drift_fraction_per_k
                                           * draw.standard_normal(cols))
        self._dnl_key = int(draw.integers(0, 2**63))
        # Per column pair: the difference channel's gain, offset (fraction of the range) and
        # common-mode leakage, from a stream of its own (the column channels' draws stay).
        self.has_differential = self.has_readout and readout.differential
        diff = physics_rng(config.seed, "readout-diff")
        pairs = cols // 2
        self.diff_gain = 1.0 + readout.diff_gain_error * diff.standard_normal(pairs)
        self.diff_offset_fraction = readout.diff_offset_fraction * diff.standard_normal(pairs)
        self.diff_leak = 10.0 ** (-readout.diff_cmrr_db / 20) * diff.standard_normal(pairs)
        self.errors: deque[int] = deque()
        self._commands: dict[str, Callable[[list[str]], str | None]] = {
            "*IDN?": self._idn, "*RST": self._rst, "*CLS": self._cls, "GEOM?": self._geom,
            "CAP?": self._cap, "SET": self._set, "GET?": self._get, "LOAD": self._load,
            "ROW?": self._row, "ROUTE": self._route, "ROUTE?": self._route_query,
            "SAFE": self._safe, "TEMP?": self._temp, "ERR?": self._err,
            "DACMAX?": self._dacmax, "DACBITS?": self._dacbits, "ADCRANGE": self._adcrange,
            "ADCRANGE?": self._adcrange_query,
            "ADCNPLC": self._adcnplc, "ADCNPLC?": self._adcnplc_query, "MVM": self._mvm,
            "SETTLE?": self._settle_query, "WAIT": self._wait, "MVMD": self._mvmd,
            "MVMB": self._mvm_batch, "MVMDB": self._mvmd_batch, "ROWS?": self._rows,
            "LOADB": self._load_batch,
        }
        self._readout = {"DACMAX?", "DACBITS?", "ADCRANGE", "ADCRANGE?", "ADCNPLC", "ADCNPLC?", "MVM", "MVMB"}
        self.has_batch = True
        """Whether ``CAP?`` lists ``BATCH`` (``ROWS?``; ``MVMB``, ``MVMDB`` with readout); a test may
        turn it off."""
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
            if not self.has_differential and tokens[0].upper() in ("MVMD", "MVMDB"):
                raise _Refused(6)
            if not self.has_batch and tokens[0].upper() in ("MVMB", "MVMDB", "ROWS?", "LOADB"):
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
        settles = self.array.physics.devices.settling_time_s > 0
        caps = (("MVM", self.has_readout), ("DIFF", self.has_differential), ("BATCH", self.has_batch),
                ("SETTLE", settles))
        return " ".join(name for name, on in caps if on)

    # ---- switch settling ---------------------------------------------------------------------
    def _settle_query(self, args: list[str]) -> str:
        self._count(args, 0)
        return f"{self.array.physics.devices.settling_time_s:g}"

    def _wait(self, args: list[str]) -> None:
        """``WAIT <s>``: idle for that long (simulated time passes), then answer."""
        self._count(args, 1)
        value = _number(args[0])
        if not 0 <= value <= 10:
            raise _Refused(3)
        self._advance_time(value)

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
        self._crc(args[1], args[2])
        row = self._index(args[0], self.rows)
        self.array.set_row_masks(row, self._row_masks(args[1]))

    def _crc(self, text: str, crc: str) -> None:
        """A ``LOAD`` checksum: its form, then that it matches ``text``."""
        if _CRC.fullmatch(crc) is None:
            raise _Refused(2)
        if crc16(text) != int(crc, 16):
            raise _Refused(5)

    def _row_masks(self, text: str) -> np.ndarray:
        """One row's comma-separated masks, checked."""
        items = text.split(",")
        if len(items) != self.cols:
            raise _Refused(2)
        return np.array([self._mask(item) for item in items], dtype=np.uint64)

    def _load_batch(self, args: list[str]) -> None:
        """``LOADB <r>,<r>,... <masks>;<masks>;... <crc>``: ``LOAD`` of several rows, all checked
        (the CRC of the mask text, then each row, the count of mask lists, each list) before any is set."""
        self._count(args, 3)
        self._crc(args[1], args[2])
        rows = [self._index(item, self.rows) for item in args[0].split(",")]
        texts = args[1].split(";")
        if len(texts) != len(rows):
            raise _Refused(2)
        masks = [self._row_masks(text) for text in texts]
        for row, values in zip(rows, masks):
            self.array.set_row_masks(row, values)

    def _row(self, args: list[str]) -> str:
        self._count(args, 1)
        row = self._index(args[0], self.rows)
        text = ",".join(f"{int(mask):x}" for mask in self.array.masks[row])
        return f"{text} {crc16(text):04x}"

    def _rows(self, args: list[str]) -> str:
        """``ROWS? <r>,<r>,...``: each row's ``ROW?`` payload, joined by ``;`` (rows checked first)."""
        self._count(args, 1)
        rows = [self._index(item, self.rows) for item in args[0].split(",")]
        return ";".join(self._row([str(row)]) for row in rows)

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

    def _dacbits(self, args: list[str]) -> str:
        self._count(args, 0)
        return str(self.readout_physics.dac_bits or 0)

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

    def _voltages(self, args: list[str]) -> np.ndarray:
        self._count(args, 1)
        items = args[0].split(",")
        if len(items) != self.rows:
            raise _Refused(2)
        voltage_v = np.array([_number(item) for item in items])
        if np.any(np.abs(voltage_v) > self.dac_max_v):
            raise _Refused(7)
        return voltage_v

    def _mvm(self, args: list[str]) -> str:
        return _currents_text(self.read_columns(self._voltages(args)))

    def _mvmd(self, args: list[str]) -> str:
        return _currents_text(self.read_pairs(self._voltages(args)))

    def _batch(self, args: list[str], read: Callable[[np.ndarray], np.ndarray]) -> str:
        """Several vectors separated by ``;``, each checked as one ``MVM`` checks it (all before the
        first is driven), then read in turn exactly as that many ``MVM`` lines would be."""
        self._count(args, 1)
        vectors = [self._voltages([item]) for item in args[0].split(";")]
        return ";".join(_currents_text(read(vector)) for vector in vectors)

    def _mvm_batch(self, args: list[str]) -> str:
        return self._batch(args, self.read_columns)

    def _mvmd_batch(self, args: list[str]) -> str:
        return self._batch(args, self.read_pairs)

    def _column_currents_a(self, voltage_v: np.ndarray) -> np.ndarray:
        """The columns' currents for requested row voltages during one integration, A (noiseless)."""
        circuit = self.array.circuit(np.ones(self.rows, bool), np.ones(self.cols, bool))
        # Switch flatness and settling: the integration starts now and lasts ADCNPLC / 60 s.
        return self.array.column_current_a(circuit, self.dac_output_v(voltage_v),
                                           start_s=self.array.now_s(), duration_s=self.adc_nplc / 60)

    def read_columns(self, voltage_v: np.ndarray) -> np.ndarray:
        """Drive every row, sense every column: ADC readings (A) as the board reports them.

        Parameters
        ----------
        voltage_v : ndarray, float (rows,)
            Requested row voltages, V; the DACs apply their nearest codes (:meth:`dac_output_v`).
        """
        current_a = self.array.read_noise(self._column_currents_a(voltage_v), self.adc_range_a, self.adc_nplc)
        reading = self.adc_reading_a(current_a)
        self._advance_time(self.adc_nplc / 60)
        return reading

    def read_pairs(self, voltage_v: np.ndarray) -> np.ndarray:
        """Drive every row, read each column pair's difference ``I[2o] - I[2o + 1]`` (A, ``MVMD``).

        Each pair's channel converts the difference with the channel's gain and offset, plus its
        common-mode leakage ``leak * (I[2o] + I[2o + 1]) / 2``. Noise: the read noise of the
        difference (its relative term is the converter's, on what it converts) and the floor of
        the second input stage; then the same ADC as :meth:`adc_reading_a`.
        """
        current_a = self._column_currents_a(voltage_v)
        pairs = self.cols // 2
        plus, minus = current_a[0: 2 * pairs: 2], current_a[1: 2 * pairs: 2]
        noisy = (self.array.read_noise(plus - minus, self.adc_range_a, self.adc_nplc)
                 + self.array.read_noise(np.zeros(pairs), self.adc_range_a, self.adc_nplc))
        signal_a = (self.diff_gain * noisy + self.diff_leak * 0.5 * (plus + minus)
                    + self.diff_offset_fraction * self.adc_range_a)
        reading = self._convert(signal_a)
        self._advance_time(self.adc_nplc / 60)
        return reading

    def dac_output_v(self, voltage_v: np.ndarray) -> np.ndarray:
        """The voltage each row DAC applies for a requested voltage, V.

        The nearest of ``2**dac_bits`` codes over +-``dac_max_v`` (a code beyond the top one
        saturates), plus the INL bow of peak ``dac_inl_lsb`` LSB; ``dac_bits`` None: the
        requested voltage itself.
        """
        bits = self.readout_physics.dac_bits
        voltage_v = np.asarray(voltage_v, dtype=np.float64)
        if bits is None:
            return voltage_v
        half = 2.0 ** (bits - 1)
        lsb_v = self.dac_max_v / half
        code = np.clip(np.round(voltage_v / lsb_v), -half, half - 1)
        return (code + self.readout_physics.dac_inl_lsb * _bow(code / half)) * lsb_v

    def channel_offset_a(self) -> np.ndarray:
        """Each column channel's offset now, A: its draw plus its drift at the array's temperature.

        Both are fractions of the ADC range (a transimpedance stage's offset scales with it).
        """
        delta_k = self.array.temperature_c - self.reference_temperature_c
        return (self.channel_offset_fraction + self.channel_offset_drift_per_k * delta_k
                ) * self.adc_range_a

    def adc_reading_a(self, current_a: np.ndarray) -> np.ndarray:
        """What each column channel reports for its input current, A.

        Gain and offset, then the ADC: the INL bow (peak ``adc_inl_lsb``), code transitions
        moved by up to ``adc_dnl_lsb / 2`` LSB each (code widths 1 +- ``adc_dnl_lsb``), the code
        times the nominal LSB; beyond the range, the overflow value.
        """
        return self._convert(self.channel_gain * current_a + self.channel_offset_a())

    def _convert(self, signal_a: np.ndarray) -> np.ndarray:
        """The ADC: a channel's output ``signal_a`` (A) as the code the board reports (A)."""
        readout, range_a = self.readout_physics, self.adc_range_a
        lsb_a = 2 * range_a / 2.0**self.adc_bits
        level = signal_a / lsb_a
        if readout.adc_inl_lsb:
            level = level + readout.adc_inl_lsb * _bow(np.clip(signal_a / range_a, -1, 1))
        code = np.round(level)
        if readout.adc_dnl_lsb:
            # The transition into code c lies at c - 1/2 + e(c), |e(c)| <= dnl / 2 < 1/2 LSB:
            # the nearest code is off by one at most.
            code = (code - (level < code - 0.5 + self._edge_lsb(code))
                    + (level >= code + 0.5 + self._edge_lsb(code + 1)))
        reading = code * lsb_a + 0.0  # + 0.0: no "-0.0" on the wire
        return np.where(np.abs(signal_a) > range_a, OVERFLOW, reading)

    def _edge_lsb(self, code: np.ndarray) -> np.ndarray:
        """How far the ADC's transition into ``code`` lies from its ideal place, LSB (fixed)."""
        return self.readout_physics.adc_dnl_lsb * (_unit_hash(code, self._dnl_key) - 0.5)


def _currents_text(current_a: np.ndarray) -> str:
    """A readout reply: the currents, ``%.9e`` each, comma-separated."""
    return ",".join(f"{value:.9e}" for value in current_a)
