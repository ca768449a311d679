import numpy as np
import pytest

from dywsss.io import atomic_path, load_npz, save_npz_atomic
from dywsss.mapfile import load_maps, save_legacy_npy, save_maps
from dywsss.registry import Registry


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_npz_roundtrip_and_truncation(tmp_path):
    path = save_npz_atomic(tmp_path / "a.npz", x=np.arange(6).reshape(2, 3))
    assert np.array_equal(load_npz(path)["x"], np.arange(6).reshape(2, 3))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="a.npz.*truncated"):
        load_npz(path)


def test_maps_roundtrip_float16(tmp_path):
    cams = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    save_maps(tmp_path / "m.npz", [4, 14], cams)
    classes, loaded = load_maps(tmp_path / "m.npz")
    assert classes.tolist() == [4, 14] and loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, cams, atol=1e-3)


@pytest.mark.parametrize(
    "classes, cams, message",
    [
        ([20], np.zeros((1, 2, 2)), "class indices"),
        ([1], np.full((1, 2, 2), np.nan), "NaN"),
        ([1], np.full((1, 2, 2), 1.5), "outside"),
        ([1, 1], np.zeros((2, 2, 2)), "repeated"),
    ],
)
def test_bad_map_files_are_named(tmp_path, classes, cams, message):
    np.savez(tmp_path / "bad.npz", classes=np.asarray(classes), cams=cams)
    with pytest.raises(ValueError, match=rf"bad.npz.*{message}"):
        load_maps(tmp_path / "bad.npz")


def test_legacy_npy_needs_opt_in(tmp_path):
    save_legacy_npy(tmp_path / "x.npy", [3], np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="x.npy.*pickled.*allow-pickle"):
        load_maps(tmp_path / "x.npy")
    with pytest.warns(UserWarning, match="pickled"):
        classes, cams = load_maps(tmp_path / "x.npy", allow_pickle=True)
    assert classes.tolist() == [3] and cams.shape == (1, 2, 2)


def test_registry_suggests_close_names():
    reg: Registry = Registry("method")
    reg.register("gradcam")(object)
    with pytest.raises(KeyError, match="did you mean gradcam"):
        reg.get("gradcm")
    with pytest.raises(KeyError, match="twice"):
        reg.register("gradcam")(object)


def test_atomic_files_get_the_usual_mode(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644
