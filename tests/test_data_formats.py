"""The readers against files in the official formats: tiny ones written here, checked
against torchvision's own readers, plus every way a file can be wrong or hostile."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import pickletools
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.datasets.utils as tv_utils
from fakedata import dumps_py2, write_fake_dataset, write_idx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.datasets.mnist import read_image_file, read_label_file

from resnetlab.data import load_arrays
from resnetlab.data.arrays import ChecksumWarning, read_batch, read_idx
from resnetlab.errors import UserError

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*official release has:UserWarning", "ignore:.*MD5 differs:UserWarning"
)
NAMES = ["mnist", "fashion-mnist", "cifar10", "cifar100"]


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


# ---------------------------------------------------------------- idx (MNIST) ---


def test_idx_header_is_the_published_format(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", np.array([7, 1, 255], dtype=np.uint8))
    raw = (tmp_path / "i").read_bytes()
    # magic 0x00000803, then the dims as big-endian int32, then the pixels
    assert raw[:16] == bytes.fromhex("00000803 00000002 00000003 00000004")
    assert raw[16:] == images.tobytes()
    assert (tmp_path / "l").read_bytes()[:8] == bytes.fromhex("00000801 00000003")
    np.testing.assert_array_equal(read_idx(tmp_path / "i", 3), images)
    # torchvision's own reader agrees
    np.testing.assert_array_equal(read_image_file(str(tmp_path / "i")).numpy(), images)
    assert read_label_file(str(tmp_path / "l")).tolist() == [7, 1, 255]


def test_idx_gz_is_read(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x", images)
    (tmp_path / "x.gz").write_bytes(gzip.compress((tmp_path / "x").read_bytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz", 3), images)


@pytest.mark.parametrize("name", NAMES)
def test_fake_files_read_identically_by_torchvision(tmp_path, name):
    (xtr, ytr), (xte, yte) = write_fake_dataset(name, tmp_path, num_train=23, num_test=11)
    for train, (x, y) in ((True, (xtr, ytr)), (False, (xte, yte))):
        images, labels = load_arrays(name, tmp_path, train=train)
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        np.testing.assert_array_equal(images.numpy(), x)
        np.testing.assert_array_equal(labels.numpy(), y)
        tv = _torchvision_dataset(name, tmp_path, train)
        data = np.asarray(tv.data)
        data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(images.numpy(), data)
        np.testing.assert_array_equal(labels.numpy(), np.asarray(tv.targets))


def _torchvision_dataset(name: str, root: Path, train: bool):
    import torchvision.datasets as tvd

    if name in ("mnist", "fashion-mnist"):
        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        return cls(str(root), train=train)

    class Unchecked(tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100):
        def _check_integrity(self) -> bool:  # tiny fakes cannot match the official MD5s
            return True

        def _load_meta(self) -> None:
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core alias under numpy 2
        return Unchecked(str(root), train=train)


def test_cifar_pickles_are_python2_style(tmp_path):
    write_fake_dataset("cifar10", tmp_path, num_train=10, num_test=5)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    assert ops[0] == ("PROTO", 2)
    assert ("SHORT_BINSTRING", "data") in ops and ("SHORT_BINSTRING", "labels") in ops
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert "BINUNICODE" not in {name for name, _ in ops}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert b"data" in pickle.loads(raw, encoding="bytes")  # Py2 str -> bytes


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python3_pickles_of_any_protocol_are_read(tmp_path, protocol):
    """Files re-saved with Python 3's pickle (as other tools write them) load too."""
    (x, y), _ = write_fake_dataset("cifar10", tmp_path, num_train=10, num_test=5)
    entry = {"batch_label": "b", "labels": y[:2].tolist(), "data": x[:2].reshape(2, -1)}
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps(entry, protocol=protocol))
    images, labels = load_arrays("cifar10", tmp_path, train=True)
    np.testing.assert_array_equal(images.numpy(), x)
    np.testing.assert_array_equal(labels.numpy(), y)


# ------------------------------------------------------------------- MD5 check ---


def test_md5_mismatch_warns_naming_the_files(tmp_path, monkeypatch):
    write_fake_dataset("cifar10", tmp_path, num_train=10, num_test=5)
    with pytest.warns(ChecksumWarning, match=r"data_batch_1.*data_batch_5"):
        load_arrays("cifar10", tmp_path, train=True)
    # With the files' real MD5s listed as official, nothing is reported.
    folder = tmp_path / "cifar-10-batches-py"
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    listed = [[f, md5[f]] for f, _ in torchvision.datasets.CIFAR10.train_list]
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "train_list", listed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)
        load_arrays("cifar10", tmp_path, train=True)


# --------------------------------------------------------------- hostile pickle ---


class _OpensFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


class _RunsShell:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("payload", [_OpensFile, _RunsShell])
@pytest.mark.parametrize("nested", [False, True])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, payload, nested):
    write_fake_dataset("cifar10", tmp_path, num_train=10, num_test=5)
    target = tmp_path / "pwned"
    evil = payload(target)
    obj = {"data": np.zeros((2, 3072), np.uint8), "labels": evil} if nested else evil
    blob = pickle.dumps(obj, protocol=2)
    # The payload is live: plain pickle would create the file.
    control = tmp_path / "control"
    result = pickle.loads(pickle.dumps(payload(control), protocol=2))
    if hasattr(result, "close"):
        result.close()
    assert control.exists()

    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(blob)
    with pytest.raises(UserError) as e:
        load_arrays("cifar10", tmp_path, train=True)
    msg = _one_line(e)
    assert "data_batch_1" in msg and "forbidden global" in msg
    assert not target.exists()


# ------------------------------------------------------ truncated and malformed ---


def _cifar_entry(**overrides):
    entry = {"batch_label": "x", "labels": [0, 1], "data": np.zeros((2, 3072), np.uint8)}
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


@pytest.mark.parametrize(
    ("blob", "expected"),
    [
        (lambda: dumps_py2(_cifar_entry())[:-40], "truncated"),
        (lambda: b"not a pickle at all", "pickle"),
        (lambda: b"", "truncated"),
        (lambda: dumps_py2({"labels": [0]}), "'data'"),
        (lambda: dumps_py2(_cifar_entry(labels=None)), "'labels'"),
        (lambda: dumps_py2(_cifar_entry(data=np.zeros((2, 100), np.uint8))), "3072"),
        (lambda: dumps_py2(_cifar_entry(data=[1, 2, 3])), "uint8"),
        (lambda: dumps_py2(_cifar_entry(labels=[0, 10])), "label 10 out of range 0..9"),
        (lambda: dumps_py2(_cifar_entry(labels=[0, 1, 2])), "3 labels for 2 images"),
        (lambda: dumps_py2(_cifar_entry(labels=["a", "b"])), "integers"),
        (lambda: b"\x80\x02]q\x00.", "expected a dict"),
    ],
)
def test_malformed_cifar_file_is_one_line(tmp_path, blob, expected):
    write_fake_dataset("cifar10", tmp_path, num_train=10, num_test=5)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(blob())
    with pytest.raises(UserError) as e:
        load_arrays("cifar10", tmp_path, train=True)
    msg = _one_line(e)
    assert str(path) in msg and expected in msg


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda raw: raw[:-5], "bytes of data"),  # truncated pixels
        (lambda raw: raw[:10], "truncated idx header"),
        (lambda raw: bytes.fromhex("00000801") + raw[4:], "magic 0x00000801"),  # labels magic
        (lambda raw: raw + b"\0", "bytes of data"),
    ],
)
def test_malformed_idx_is_one_line(tmp_path, mangle, expected):
    write_fake_dataset("mnist", tmp_path, num_train=10, num_test=5)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(mangle(path.read_bytes()))
    with pytest.raises(UserError) as e:
        load_arrays("mnist", tmp_path, train=True)
    msg = _one_line(e)
    assert str(path) in msg and expected in msg


def test_idx_label_out_of_range_and_count_mismatch(tmp_path):
    write_fake_dataset("fashion-mnist", tmp_path, num_train=10, num_test=5)
    labels = tmp_path / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    write_idx(labels, np.array([0] * 9 + [12], np.uint8))
    with pytest.raises(UserError, match="label 12 out of range 0..9"):
        load_arrays("fashion-mnist", tmp_path)
    write_idx(labels, np.zeros(9, np.uint8))
    with pytest.raises(UserError, match="9 labels for 10 images"):
        load_arrays("fashion-mnist", tmp_path)


# ---------------------------------------------------------- missing / download ---


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar100", "cifar-100-python/train"),
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("fashion-mnist", "FashionMNIST/raw/train-images-idx3-ubyte"),
    ],
)
def test_missing_data_names_paths_and_remedies(tmp_path, name, path):
    with pytest.raises(UserError) as e:
        load_arrays(name, tmp_path)
    msg = _one_line(e)
    assert str(tmp_path / path) in msg
    for remedy in ("--data-path", "RESNETLAB_DATA", "--download"):
        assert remedy in msg


def test_unknown_dataset_lists_known_ones(tmp_path):
    with pytest.raises(UserError, match="known: mnist, fashion-mnist, cifar10, cifar100, folder"):
        load_arrays("imagenet", tmp_path)


def _fake_network(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Serve ``files`` by basename through torchvision's own download function."""
    fetched: list[str] = []

    def urlretrieve(url, filename, chunk_size=0):
        fetched.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise OSError(f"offline: {url}")
        Path(filename).write_bytes(files[name])

    monkeypatch.setattr(tv_utils, "_urlretrieve", urlretrieve)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    return fetched


def test_mnist_download_goes_through_torchvision_with_checksums(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (xtr, _), _ = write_fake_dataset("mnist", src, num_train=12, num_test=4)
    gz = {f"{p.name}.gz": gzip.compress(p.read_bytes()) for p in (src / "MNIST" / "raw").iterdir()}
    root = tmp_path / "root"
    fetched = _fake_network(monkeypatch, gz)
    # Official checksums: the fake files are rejected by torchvision's MD5 check.
    with pytest.raises(UserError) as e:
        load_arrays("mnist", root, download=True)
    assert "download" in _one_line(e)
    assert any(u.endswith("train-images-idx3-ubyte.gz") for u in fetched)
    mirrors = torchvision.datasets.MNIST.mirrors
    assert {u.rsplit("/", 1)[0] + "/" for u in fetched} <= set(mirrors)
    # With checksums that match, the files are fetched, unpacked and read.
    resources = [
        (n, hashlib.md5(gz[n]).hexdigest()) for n, _ in torchvision.datasets.MNIST.resources
    ]
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    images, _ = load_arrays("mnist", root, download=True)
    np.testing.assert_array_equal(images.numpy(), xtr)
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_cifar_download_goes_through_torchvision_with_checksums(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (xtr, _), _ = write_fake_dataset("cifar10", src, num_train=10, num_test=5)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive = buf.getvalue()
    cls = torchvision.datasets.CIFAR10
    fetched = _fake_network(monkeypatch, {cls.filename: archive})
    root = tmp_path / "root"
    with pytest.raises(UserError) as e:  # official archive MD5: refused
        load_arrays("cifar10", root, download=True)
    assert cls.filename in fetched[0] and "download" in _one_line(e)
    monkeypatch.setattr(cls, "tgz_md5", hashlib.md5(archive).hexdigest())
    with pytest.warns(ChecksumWarning):  # the pickles themselves are not the official ones
        images, _ = load_arrays("cifar10", root, download=True)
    np.testing.assert_array_equal(images.numpy(), xtr)


# -------------------------------------------------------------------- fuzzing ---

_PIXELS = np.arange(3 * 3072).astype(np.uint8).reshape(3, -1)
_VALID = dumps_py2({"batch_label": "b", "labels": [1, 2, 3], "data": _PIXELS})
_AT = _VALID.find(_PIXELS.tobytes())
# Edit the structure, not the pixels (which any byte value leaves valid).
_STRUCTURE = [i for i in range(len(_VALID)) if not _AT <= i < _AT + _PIXELS.size]


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    edits=st.lists(st.tuples(st.sampled_from(_STRUCTURE), st.integers(0, 255)), max_size=4),
    cut=st.integers(1, len(_VALID)),
)
def test_corrupted_pickles_never_escape_as_anything_but_user_error(tmp_path, edits, cut):
    blob = bytearray(_VALID)
    for pos, byte in edits:
        blob[pos] = byte
    path = tmp_path / "data_batch_1"
    path.write_bytes(bytes(blob[:cut]))
    try:
        x, y, _ = read_batch(path, "cifar10")
    except UserError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:  # whatever got through is structurally valid
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and len(y) == len(x)
        assert ((y >= 0) & (y < 10)).all()


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    header=st.one_of(
        st.binary(max_size=20),  # anything
        st.binary(min_size=12, max_size=12).map(lambda b: bytes.fromhex("00000803") + b),
        st.tuples(*[st.integers(0, 4)] * 3).map(  # right magic, small dims
            lambda dims: bytes.fromhex("00000803") + b"".join(d.to_bytes(4, "big") for d in dims)
        ),
    ),
    body=st.binary(max_size=64),
)
def test_random_idx_bytes_are_read_or_refused_in_one_line(header, body):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x-idx3-ubyte"
        path.write_bytes(header + body)
        try:
            array = read_idx(path, 3)
        except UserError as e:
            assert "\n" not in str(e) and str(path) in str(e)
        else:
            assert array.ndim == 3 and array.size == len(header + body) - 16
