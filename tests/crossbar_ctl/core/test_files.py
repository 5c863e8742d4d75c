"""Record files: checksummed, atomic, versioned, never pickled."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import RecordError
from crossbar_ctl.core.files import atomic_save_figure, atomic_write_text, load_record, read_npz, save_record


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
    with pytest.raises(RecordError, match="not an .npz file"):
        load_record(path, Header)


def _other_formats(tmp_path):
    """Files that are not .npz archives, and what the reader must call each of them."""
    import pickle

    rng = np.random.default_rng(0)
    files = {
        "text": (b"layer0.weight = 1, 2, 3\n", "it holds text"),
        "random": (rng.bytes(4096), "unrecognised binary data"),
        "empty": (b"", "it is empty"),
        "pickle": (pickle.dumps({"a": [1.0]}, protocol=4), "a Python pickle, which crossbar-ctl never loads"),
    }
    paths = {}
    for name, (data, said) in files.items():
        paths[name] = (tmp_path / f"{name}.npz", said)
        paths[name][0].write_bytes(data)
    np.save(tmp_path / "bare.npy", np.arange(3.0))
    paths["npy"] = (tmp_path / "bare.npy", "a bare .npy array")
    return paths


def test_other_formats_are_named_plainly_and_pickles_never_suggested(tmp_path):
    for path, said in _other_formats(tmp_path).values():
        with pytest.raises(RecordError) as info:
            read_npz(path, what="network")
        message = str(info.value)
        assert message.startswith(f"{path}: not an .npz file (") and said in message
        assert "allow_pickle" not in message and "pickled" not in message and "\n" not in message


def test_object_arrays_and_stray_members_are_refused(tmp_path):
    import zipfile

    path = tmp_path / "objects.npz"
    np.savez(path, a=np.array([{}, 1], dtype=object))
    with pytest.raises(RecordError, match="holds object arrays; .* never pickles") as info:
        read_npz(path)
    assert "allow_pickle" not in str(info.value)
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(RecordError, match="member 'notes.txt' is not a .npy array"):
        read_npz(tmp_path / "zip.npz")


def test_a_header_that_would_not_read_back_is_not_written(tmp_path):
    class Figures(StrictModel):
        schema_version: int = 1
        kind: str = "figures"
        bits: float = 0.0

    path = tmp_path / "r.npz"
    with pytest.raises(RecordError, match="bits"):
        save_record(path, Figures(bits=float("inf")), {})
    assert not path.exists()
    save_record(path, Figures(bits=9.5), {})
    assert load_record(path, Figures)[0].bits == 9.5


@pytest.mark.parametrize("name, magic", [("plot.pdf", b"%PDF"), ("plot.PNG", b"\x89PNG"), ("plot", b"\x89PNG")])
def test_a_figure_is_saved_whole_in_the_format_its_suffix_names(tmp_path, name, magic):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    atomic_save_figure(figure, tmp_path / "out" / name, dpi=50)
    assert (tmp_path / "out" / name).read_bytes().startswith(magic)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [name]
