"""Record files: checksummed, atomic, versioned, never pickled."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import RecordError
from crossbar_ctl.core.files import atomic_write_text, load_record, save_record


class Header(StrictModel):
    schema_version: int = 2
    kind: str = "demo"
    note: str = ""


def test_round_trip(tmp_path):
    path = tmp_path / "r.npz"
    arrays = {"g": np.linspace(0, 1, 12).reshape(3, 4), "flags": np.zeros(5, dtype=np.uint8)}
    save_record(path, Header(note="hello"), arrays)
    header, loaded = load_record(path, Header, kind="demo")
    assert header.note == "hello"
    np.testing.assert_array_equal(loaded["g"], arrays["g"])
    assert loaded["flags"].dtype == np.uint8


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=5)))
def test_round_trip_any_array(tmp_path_factory, array):
    path = tmp_path_factory.mktemp("rec") / "r.npz"
    save_record(path, Header(), {"a": array})
    _, loaded = load_record(path, Header)
    np.testing.assert_array_equal(loaded["a"], array)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "r.npz"
    save_record(path, Header(), {"g": np.arange(100.0)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordError, match="truncated or corrupt"):
        load_record(path, Header)


def test_modified_array_fails_checksum(tmp_path):
    path = tmp_path / "r.npz"
    save_record(path, Header(), {"g": np.arange(10.0)})
    with np.load(path, allow_pickle=False) as npz:
        contents = {name: npz[name] for name in npz.files}
    contents["g"] = contents["g"] + 1
    np.savez(path, **contents)
    with pytest.raises(RecordError, match="checksum"):
        load_record(path, Header)


def test_newer_schema_and_wrong_kind_are_refused(tmp_path):
    path = tmp_path / "r.npz"
    save_record(path, Header(schema_version=3), {})
    with pytest.raises(RecordError, match="newer"):
        load_record(path, Header)
    save_record(path, Header(kind="plan"), {})
    with pytest.raises(RecordError, match="expected 'demo'"):
        load_record(path, Header, kind="demo")


def test_foreign_npz_and_missing_file(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.arange(3))
    with pytest.raises(RecordError, match="not a crossbar-ctl record"):
        load_record(path, Header)
    with pytest.raises(RecordError, match="no such file"):
        load_record(tmp_path / "nothing.npz", Header)


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError, match="object"):
        save_record(tmp_path / "r.npz", Header(), {"a": np.array([{}], dtype=object)})


def test_atomic_write_leaves_no_temporaries(tmp_path):
    path = tmp_path / "out" / "report.json"
    atomic_write_text(path, "{}")
    atomic_write_text(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_atomic_write_uses_ordinary_permissions(tmp_path):
    import os
    import stat

    path = tmp_path / "r.txt"
    atomic_write_text(path, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_file_of_another_format_is_refused_plainly(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("garbage")
    with pytest.raises(RecordError, match="not an .npz at all"):
        load_record(path, Header)
