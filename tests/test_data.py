import gzip

import h5py
import numpy as np
import pytest
import torch
from conftest import IMAGE_SIZE, NUM_CLASSES, TRAIN_LIMIT, write_idx

from elf_pipeline.artifacts.data_file import DatasetInfo, load_split, normalize, read_info
from elf_pipeline.infra.io import ArtifactError, open_h5, read_provenance
from elf_pipeline.stages.data import FASHION_MNIST_CLASSES, SOURCES, DataSourceError, prepare_data, read_idx, resize_images

RNG = np.random.default_rng(1234)


def _fashion_folder(root, n_train=6, n_test=4, gz=True):
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": RNG.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": RNG.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    suffix = ".gz" if gz else ""
    write_idx(root / f"train-images-idx3-ubyte{suffix}", arrays["train_images"])
    write_idx(root / f"train-labels-idx1-ubyte{suffix}", arrays["train_labels"])
    write_idx(root / f"t10k-images-idx3-ubyte{suffix}", arrays["test_images"])
    write_idx(root / f"t10k-labels-idx1-ubyte{suffix}", arrays["test_labels"])
    return arrays


# --------------------------------------------------------------------------- read_idx

@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_images_and_labels_exact(tmp_path, gz):
    images = RNG.integers(0, 256, size=(3, 5, 4), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    img_path = write_idx(tmp_path / f"img-idx3-ubyte{suffix}", images)
    lab_path = write_idx(tmp_path / f"lab-idx1-ubyte{suffix}", labels)
    # the header really is the published format
    raw = gzip.decompress(img_path.read_bytes()) if gz else img_path.read_bytes()
    assert int.from_bytes(raw[:4], "big") == 0x00000803
    raw = gzip.decompress(lab_path.read_bytes()) if gz else lab_path.read_bytes()
    assert int.from_bytes(raw[:4], "big") == 0x00000801
    got_images, got_labels = read_idx(img_path), read_idx(lab_path)
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 5, 4)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_bad_magic_raises(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + (2).to_bytes(4, "big") + b"\x00\x00")  # float type code
    with pytest.raises(DataSourceError, match="bad magic") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    path.write_bytes(b"\x12\x34")
    with pytest.raises(DataSourceError, match="bad magic"):
        read_idx(path)


def test_read_idx_header_size_mismatch_raises(tmp_path):
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (2, 28, 28)) + bytes(100))
    with pytest.raises(DataSourceError, match=r"header promises \(2, 28, 28\)"):
        read_idx(path)


def test_read_idx_truncated_gzip_raises(tmp_path):
    path = write_idx(tmp_path / "t-idx1-ubyte.gz", np.arange(1000, dtype=np.uint8) % 10)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataSourceError, match="cannot read IDX") as info:
        read_idx(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- Fashion-MNIST layout

@pytest.mark.parametrize("gz", [True, False])
def test_prepare_fashion_mnist_pad_to_32(tmp_path, gz):
    arrays = _fashion_folder(tmp_path / "fmnist", gz=gz)
    out = tmp_path / "data.h5"
    summary = prepare_data(source="fashion_mnist", out=out, image_size=32, resize="pad", root=str(tmp_path / "fmnist"))
    assert summary["train"] == 6 and summary["test"] == 4
    with open_h5(out) as h5:
        train_images, train_labels = h5["train/images"][:], h5["train/labels"][:]
        test_images, test_labels = h5["test/images"][:], h5["test/labels"][:]
        attrs = dict(h5.attrs)
        prov = read_provenance(h5)
    assert train_images.shape == (6, 32, 32, 1) and test_images.shape == (4, 32, 32, 1)
    assert train_images.dtype == np.uint8 and train_labels.dtype == np.int64
    np.testing.assert_array_equal(train_labels, arrays["train_labels"].astype(np.int64))
    np.testing.assert_array_equal(test_labels, arrays["test_labels"].astype(np.int64))
    # (32 - 28) / 2 = 2 pixels of zero padding on every side
    np.testing.assert_array_equal(train_images[:, 2:30, 2:30, 0], arrays["train_images"])
    np.testing.assert_array_equal(test_images[:, 2:30, 2:30, 0], arrays["test_images"])
    border = np.ones((32, 32), dtype=bool)
    border[2:30, 2:30] = False
    assert (train_images[:, border] == 0).all()
    padded = np.zeros((6, 32, 32), dtype=np.float64)
    padded[:, 2:30, 2:30] = arrays["train_images"] / 255.0
    np.testing.assert_allclose(attrs["mean"], [padded.mean()], rtol=1e-5)
    np.testing.assert_allclose(attrs["std"], [padded.std()], rtol=1e-5)
    np.testing.assert_allclose(summary["mean"], [padded.mean()], rtol=1e-9)
    assert [c.decode() if isinstance(c, bytes) else c for c in attrs["classes"]] == FASHION_MNIST_CLASSES
    assert attrs["source"] == "fashion_mnist" and int(attrs["image_size"]) == 32
    assert prov["stage"] == "data" and prov["config"]["resize"] == "pad"
    info = read_info(out)
    assert info.channels == 1 and info.num_classes == 10 and info.image_size == 32


def test_prepare_fashion_mnist_missing_folder_explains_install(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataSourceError, match="apt-get install dataset-fashion-mnist") as info:
        prepare_data(source="fashion_mnist", out=tmp_path / "d.h5", image_size=32, root=str(missing))
    assert str(missing) in str(info.value)
    assert not (tmp_path / "d.h5").exists()


def test_prepare_fashion_mnist_missing_file_names_it(tmp_path):
    root = tmp_path / "fmnist"
    _fashion_folder(root)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataSourceError, match="t10k-labels-idx1-ubyte.*apt-get install dataset-fashion-mnist"):
        prepare_data(source="fashion_mnist", out=tmp_path / "d.h5", image_size=32, root=str(root))


def test_prepare_fashion_mnist_corrupt_header(tmp_path):
    root = tmp_path / "fmnist"
    _fashion_folder(root)
    bad = root / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(bad.read_bytes()))
    raw[2] = 0x0B  # type code for int16 instead of unsigned byte
    bad.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataSourceError, match="bad magic") as info:
        prepare_data(source="fashion_mnist", out=tmp_path / "d.h5", image_size=32, root=str(root))
    assert str(bad) in str(info.value)
    assert not (tmp_path / "d.h5").exists()


def test_prepare_fashion_mnist_image_label_count_mismatch(tmp_path):
    root = tmp_path / "fmnist"
    _fashion_folder(root)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataSourceError, match="do not match"):
        prepare_data(source="fashion_mnist", out=tmp_path / "d.h5", image_size=32, root=str(root))


def test_prepare_unknown_source(tmp_path):
    with pytest.raises(DataSourceError, match="unknown dataset source 'no_such_dataset'.*digits"):
        prepare_data(source="no_such_dataset", out=tmp_path / "d.h5", image_size=32)


# --------------------------------------------------------------------------- resize

def test_resize_pad_rejects_shrinking_and_unknown_mode():
    images = np.zeros((2, 28, 28, 1), dtype=np.uint8)
    with pytest.raises(DataSourceError, match="interpolate"):
        resize_images(images, 16, "pad")
    with pytest.raises(DataSourceError, match="unknown resize mode"):
        resize_images(images, 32, "stretch")
    assert resize_images(images, 28, "stretch") is images  # same size: untouched


def test_resize_interpolate_shape_and_constant_image():
    images = np.full((3, 8, 8, 1), 77, dtype=np.uint8)
    images[1] = 200
    out = resize_images(images, 20, "interpolate")
    assert out.shape == (3, 20, 20, 1) and out.dtype == np.uint8
    assert (out[0] == 77).all() and (out[1] == 200).all()


# --------------------------------------------------------------------------- digits + loading

def test_digits_prepared_fixture_is_class_balanced(digits_h5):
    with open_h5(digits_h5) as h5:
        labels = h5["train/labels"][:]
        images = h5["train/images"][:]
        n_test = len(h5["test/labels"])
    assert len(labels) == TRAIN_LIMIT
    assert np.bincount(labels, minlength=NUM_CLASSES).tolist() == [TRAIN_LIMIT // NUM_CLASSES] * NUM_CLASSES
    assert images.shape == (TRAIN_LIMIT, IMAGE_SIZE, IMAGE_SIZE, 1)
    assert n_test > 0
    pixels = images.astype(np.float64) / 255.0
    info = read_info(digits_h5)
    np.testing.assert_allclose(info.mean, [pixels.mean()], rtol=1e-5)
    np.testing.assert_allclose(info.std, [pixels.std()], rtol=1e-5)
    assert info.source == "digits" and info.classes == [str(d) for d in range(10)]


def test_digits_split_is_seeded_and_disjoint():
    a, b = SOURCES["digits"](split_seed=0), SOURCES["digits"](split_seed=0)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    c = SOURCES["digits"](split_seed=1)
    assert not np.array_equal(a.test_images, c.test_images)
    assert len(a.train_labels) + len(a.test_labels) == 1797
    assert a.train_images.shape[1:] == (8, 8, 1)


def test_load_split_normalises_train_to_zero_mean_unit_std(digits_h5):
    images, labels, info = load_split(digits_h5, "train")
    assert images.dtype == torch.float32 and images.shape == (TRAIN_LIMIT, 1, IMAGE_SIZE, IMAGE_SIZE)
    assert labels.dtype == torch.int64
    assert abs(float(images.mean())) < 1e-4
    assert abs(float(images.std(unbiased=False)) - 1.0) < 1e-3
    limited, limited_labels, _ = load_split(digits_h5, "test", limit=7)
    assert len(limited) == 7 and len(limited_labels) == 7


def test_normalize_matches_manual():
    info = DatasetInfo(np.array([0.5, 0.25], dtype=np.float32), np.array([0.5, 0.25], dtype=np.float32),
                       ["a", "b"], 2, "x")
    images = np.array([[[[255, 0], [0, 255]], [[127, 64], [64, 127]]]], dtype=np.uint8)  # 1x2x2x2 NHWC
    out = normalize(images, info)
    assert out.shape == (1, 2, 2, 2)
    expected = (images.transpose(0, 3, 1, 2) / 255.0 - info.mean.reshape(1, 2, 1, 1)) / info.std.reshape(1, 2, 1, 1)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_load_split_errors(digits_h5, tmp_path):
    with pytest.raises(ArtifactError, match="no split 'valid'"):
        load_split(digits_h5, "valid")
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as h5:
        h5["train/images"] = np.zeros((1, 2, 2, 1), dtype=np.uint8)
    with pytest.raises(ArtifactError, match="lacks attribute"):
        read_info(bare)
    with pytest.raises(ArtifactError, match="not found"):
        load_split(tmp_path / "absent.h5", "train")
