"""Tests of nelu.data: registry, verified loading, offline download path, patches, noise.

The image tests need the data folder in $NELU_DATA (the Makefile sets it); they
skip, saying so, when it is unset or absent. The download tests serve files from
a local HTTP server on 127.0.0.1 and never reach the internet.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import math
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
import torch

import nelu.data as D
from nelu.data import (
    DATASETS,
    NOISE_KINDS,
    DataError,
    add_noise,
    fetch,
    image_to_patches,
    load_dataset,
    load_image,
    noise_std_map,
    patches_to_image,
    random_patches,
    registry,
)

SHARED = os.environ.get("NELU_DATA")
needs_data = pytest.mark.skipif(
    not SHARED or not Path(SHARED).is_dir(),
    reason=f"NELU_DATA is unset or not a folder ({SHARED!r}); set it to the image data folder",
)
PINNED = "https://raw.githubusercontent.com/cszn/DnCNN/e93b27812d3ff523a3a79d19e5e50d233d7a8d0a/"
ORIGIN = {
    "Train400": "TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400",
    "Set12": "testsets/Set12",
    "BSD68": "testsets/BSD68",
}
EXPECTED = {  # name: (count, allowed (H, W) shapes)
    "Train400": (400, {(180, 180)}),
    "Set12": (12, {(256, 256), (512, 512)}),
    "BSD68": (68, {(321, 481), (481, 321)}),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- registry


def test_registry_urls_are_pinned_public_raw_files():
    entries = registry()
    assert len(entries) == 480
    for rel, (sha, url) in entries.items():
        folder, name = rel.split("/")
        assert folder in DATASETS
        assert len(sha) == 64 and int(sha, 16) >= 0
        assert url == f"{PINNED}{ORIGIN[folder]}/{name}"


@needs_data
def test_registry_matches_sha256sums():
    sums_file = Path(SHARED) / "SHA256SUMS"
    if not sums_file.is_file():
        pytest.skip(f"{sums_file} is absent (NELU_DATA holds no SHA256SUMS)")
    sums = {}
    for line in sums_file.read_text().splitlines():
        sha, rel = line.split()
        sums[rel] = sha
    assert len(sums) == 480
    assert {rel: sha for rel, (sha, _) in registry().items()} == sums


def test_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NELU_DATA", str(tmp_path))
    assert D.data_dir() == tmp_path
    monkeypatch.delenv("NELU_DATA")
    assert D.data_dir() == D.REGISTRY_PATH.parent
    assert D.REGISTRY_PATH.is_file()


# ---------------------------------------------------------------------------- loading


@needs_data
@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_loads(name):
    count, shapes = EXPECTED[name]
    images = load_dataset(name)
    assert len(images) == count
    for img in images:
        assert img.dtype == torch.float32 and tuple(img.shape) in shapes
        assert 0.0 <= img.min() < img.max() <= 1.0
    levels = torch.cat([img.flatten() for img in images[:5]]) * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # pixel / 255


@needs_data
def test_load_order_limit_and_full_checksum_pass(monkeypatch):
    monkeypatch.setattr(D, "_VERIFIED", set())  # force hashing every file of the set
    hashed = []
    real = D._sha256
    monkeypatch.setattr(D, "_sha256", lambda p: hashed.append(p.name) or real(p))
    images = load_dataset("BSD68")
    assert len(hashed) == 68 and hashed == sorted(hashed)
    assert len(load_dataset("BSD68", limit=3)) == 3 and len(hashed) == 68  # cached now
    first = load_image(Path(SHARED) / "BSD68" / "test001.png")
    assert torch.equal(images[0], first)
    assert load_dataset("Set12", limit=0) == []


def test_unknown_dataset_and_file():
    with pytest.raises(DataError, match="Train400, Set12, BSD68") as err:
        load_dataset("BSD100")
    assert "BSD100" in str(err.value)
    with pytest.raises(DataError, match="nope.png"):
        fetch("Set12/nope.png")
    with pytest.raises(ValueError, match="limit"):
        load_dataset("Set12", limit=-1)


# ------------------------------------------------------------------- offline download


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A local HTTP server over tmp_path/'srv'; yields (folder, base URL)."""
    root = tmp_path / "srv"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    for var in ("NO_PROXY", "no_proxy"):  # never route 127.0.0.1 through a proxy
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("NELU_DATA", str(empty))
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def point_registry_to(monkeypatch, base: str, rels: list[str]) -> None:
    for rel in rels:
        sha, _ = registry()[rel]
        monkeypatch.setitem(registry(), rel, (sha, f"{base}/{rel}"))


@needs_data
def test_download_through_pooch_then_verify(served, monkeypatch):
    root, base = served
    rels = sorted(rel for rel in registry() if rel.startswith("Set12/"))
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(SHARED) / rel, root / rel)
    point_registry_to(monkeypatch, base, rels)
    target = D.data_dir()
    assert files_under(target) == []

    path = fetch(rels[0])
    assert path == target / rels[0] and path.is_file()
    assert sha256(path) == registry()[rels[0]][0]

    images = load_dataset("Set12")  # downloads the other 11
    assert len(images) == 12
    assert sorted(p.relative_to(target).as_posix() for p in files_under(target)) == rels
    assert torch.equal(images[3], load_image(Path(SHARED) / rels[3]))

    (root / rels[0]).unlink()  # a present verified file is not downloaded again
    assert fetch(rels[0]) == path


@needs_data
def test_served_file_with_wrong_bytes_leaves_nothing(served, monkeypatch):
    root, base = served
    rel = "BSD68/test001.png"
    (root / "BSD68").mkdir()
    data = bytearray((Path(SHARED) / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / rel).write_bytes(bytes(data))
    point_registry_to(monkeypatch, base, [rel])
    with pytest.raises(DataError, match="could not download BSD68/test001.png") as err:
        fetch(rel)
    assert "hash" in str(err.value).lower() or "sha256" in str(err.value).lower()
    assert files_under(D.data_dir()) == []


def test_missing_on_server_and_unreachable_url(served, monkeypatch):
    _, base = served
    rel = "Set12/05.png"
    point_registry_to(monkeypatch, base, [rel])  # nothing is served: HTTP 404
    with pytest.raises(DataError, match="404"):
        fetch(rel)

    with socket.socket() as sock:  # a port on 127.0.0.1 that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sha, _ = registry()[rel]
    monkeypatch.setitem(registry(), rel, (sha, f"http://127.0.0.1:{port}/{rel}"))
    with pytest.raises(DataError) as err:
        fetch(rel)
    message = str(err.value)
    assert f"could not download {rel} from http://127.0.0.1:{port}/{rel}" in message
    assert "NELU_DATA" in message and "internet" in message
    assert files_under(D.data_dir()) == []


@needs_data
def test_corrupt_local_file_is_named_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("NELU_DATA", str(tmp_path))
    rel = "Set12/01.png"
    bad = tmp_path / rel
    bad.parent.mkdir()
    data = bytearray((Path(SHARED) / rel).read_bytes())
    data[-20] ^= 0x01
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        load_dataset("Set12", limit=1)
    message = str(err.value)
    assert str(bad) in message and "corrupt" in message
    assert "delete it" in message and "NELU_DATA" in message
    assert bad.read_bytes() == bytes(data)  # the user's file is not touched


def test_unreadable_png_raises_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NELU_DATA", str(tmp_path))
    rel = "Set12/01.png"
    bad = tmp_path / rel
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    monkeypatch.setitem(registry(), rel, (sha256(bad), "http://127.0.0.1:9/unused"))
    with pytest.raises(DataError, match="cannot read the image") as err:
        load_dataset("Set12", limit=1)
    assert str(bad) in str(err.value)


def test_verification_is_cached_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("NELU_DATA", str(tmp_path))
    rel = "Set12/02.png"
    f = tmp_path / rel
    f.parent.mkdir()
    f.write_bytes(b"some bytes")
    monkeypatch.setitem(registry(), rel, (sha256(f), "http://127.0.0.1:9/unused"))
    calls = []
    real = D._sha256
    monkeypatch.setattr(D, "_sha256", lambda p: calls.append(p) or real(p))
    fetch(rel)
    fetch(rel)
    assert len(calls) == 1
    f.write_bytes(b"other bytes!")  # changed size: hashed again, and rejected
    with pytest.raises(DataError, match="corrupt"):
        fetch(rel)
    assert len(calls) == 2


# ---------------------------------------------------------------------------- patches


def reference_patches(x: torch.Tensor, p: int, s: int) -> tuple[torch.Tensor, list, list]:
    """Slow loop reference: corners 0, s, 2s, ... plus the last one."""
    H, W = x.shape[-2:]
    rows = sorted(set(range(0, H - p + 1, s)) | {H - p})
    cols = sorted(set(range(0, W - p + 1, s)) | {W - p})
    patches = [x[:, 0, r : r + p, c : c + p].reshape(x.shape[0], -1) for r in rows for c in cols]
    return torch.stack(patches, 1), rows, cols


CASES = [  # (H, W, patch, stride)
    (8, 8, 8, 1), (10, 9, 4, 3), (17, 17, 5, 2), (32, 20, 8, 1), (32, 20, 8, 3),
    (32, 20, 8, 8), (21, 34, 7, 4), (12, 13, 1, 1), (16, 16, 3, 2), (9, 30, 6, 5),
]


@pytest.mark.parametrize("H,W,p,s", CASES)
def test_patches_match_reference_and_round_trip(H, W, p, s):
    g = torch.Generator().manual_seed(H * 100 + W)
    x = torch.rand(3, 1, H, W, generator=g, dtype=torch.float64)
    patches = image_to_patches(x, p, s)
    expected, rows, cols = reference_patches(x, p, s)
    assert patches.shape == (3, len(rows) * len(cols), p * p)
    assert torch.equal(patches, expected)
    assert torch.equal(patches[:, -1], x[:, 0, H - p :, W - p :].reshape(3, -1))  # last corner
    back = patches_to_image(patches, (H, W), p, s)
    assert back.shape == x.shape
    torch.testing.assert_close(back, x, rtol=0, atol=1e-14)
    back32 = patches_to_image(image_to_patches(x.float(), p, s), (H, W), p, s)
    torch.testing.assert_close(back32, x.float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("H,W,p,s", CASES)
def test_every_pixel_is_covered_and_overlaps_are_averaged(H, W, p, s):
    ids = torch.arange(H * W, dtype=torch.float64).reshape(1, 1, H, W)
    assert torch.equal(torch.unique(image_to_patches(ids, p, s)), ids.flatten())
    # Inconsistent patches: each pixel is the mean of the values that cover it.
    _, rows, cols = reference_patches(ids, p, s)
    g = torch.Generator().manual_seed(1)
    patches = torch.rand(2, len(rows) * len(cols), p * p, generator=g, dtype=torch.float64)
    sums, counts = torch.zeros(2, H, W, dtype=torch.float64), torch.zeros(H, W, dtype=torch.float64)
    for i, (r, c) in enumerate((r, c) for r in rows for c in cols):
        sums[:, r : r + p, c : c + p] += patches[:, i].reshape(2, p, p)
        counts[r : r + p, c : c + p] += 1
    torch.testing.assert_close(patches_to_image(patches, (H, W), p, s)[:, 0], sums / counts)


@pytest.mark.parametrize("H, W, p, s", [(20, 26, 4, 2), (20, 26, 4, 3), (9, 9, 3, 3), (8, 11, 8, 1)])
def test_patches_equal_slices_regular_grid_or_not(H, W, p, s):
    """Against explicit slicing (the regular-grid branch uses unfold, the other gathers by index)."""
    x = torch.rand(2, 1, H, W)
    rows = sorted(set(range(0, H - p + 1, s)) | {H - p})
    cols = sorted(set(range(0, W - p + 1, s)) | {W - p})
    expected = torch.stack([x[:, 0, r:r + p, c:c + p].reshape(2, p * p) for r in rows for c in cols], dim=1)
    torch.testing.assert_close(image_to_patches(x, p, s), expected, rtol=0, atol=0)


def test_patch_argument_errors():
    x = torch.rand(1, 1, 10, 10)
    with pytest.raises(ValueError, match="stride"):
        image_to_patches(x, 3, stride=4)  # would skip pixels
    with pytest.raises(ValueError, match="patch"):
        image_to_patches(x, 11)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        image_to_patches(torch.rand(10, 10), 3)
    with pytest.raises(ValueError, match="patches must have shape"):
        patches_to_image(torch.rand(1, 5, 9), (10, 10), 3)


def test_random_patches_are_real_patches_and_deterministic():
    sizes = [(20, 30), (31, 17), (8, 8)]
    images, start = [], 0
    for H, W in sizes:  # pixel value = a global id, to decode where a patch came from
        images.append(torch.arange(start, start + H * W, dtype=torch.float64).reshape(H, W))
        start += H * W
    p, n = 8, 6000
    out = random_patches(images, n, p, torch.Generator().manual_seed(3))
    assert out.shape == (n, p * p) and out.dtype == torch.float64
    assert torch.equal(out, random_patches(images, n, p, torch.Generator().manual_seed(3)))
    assert not torch.equal(out, random_patches(images, n, p, torch.Generator().manual_seed(4)))

    first = out[:, 0].long()
    bounds = torch.tensor([0, 20 * 30, 20 * 30 + 31 * 17])
    k = torch.bucketize(first, bounds, right=True) - 1
    counts = torch.bincount(k, minlength=3)
    assert (counts - n / 3).abs().max() < 0.1 * n / 3  # images drawn uniformly
    tops, lefts = [], []
    for i, (H, W) in enumerate(sizes):  # loop over 3 images, checking their patches at once
        local = first[k == i] - bounds[i]
        top, left = local // W, local % W
        assert top.max() <= H - p and left.max() <= W - p
        expect = image_to_patches(images[i][None, None], p)[0]  # all patches of image i
        torch.testing.assert_close(out[k == i], expect[top * (W - p + 1) + left], rtol=0, atol=0)
        tops.append(top)
        lefts.append(left)
    assert tops[0].min() == 0 and tops[0].max() == 20 - p  # both extreme corners reachable
    assert lefts[0].min() == 0 and lefts[0].max() == 30 - p
    assert random_patches(images, 0, p, None).shape == (0, p * p)
    with pytest.raises(ValueError):
        random_patches(images, 5, 9, None)  # the 8x8 image is too small


# ------------------------------------------------------------------------------ noise


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_std_matches_sigma(kind):
    g = torch.Generator().manual_seed(0)
    sigma = 25.0
    x = torch.full((1000, 1000), 0.5, dtype=torch.float64)
    noise = add_noise(x, sigma, kind=kind, generator=g) - x
    assert abs(noise.mean()) < 0.01 * sigma / 255
    if kind == "varying":  # ramp 0.5 -> 1.5 sigma from left to right, mean sigma
        ramp = noise_std_map(x, sigma, kind=kind) * 255
        assert torch.equal(ramp[0], ramp[-1]) and abs(ramp.mean() - sigma) < 1e-9
        ends = torch.tensor([0.5, 1.5], dtype=x.dtype) * sigma
        torch.testing.assert_close(ramp[0, [0, -1]], ends)
        ratio = noise.std(0) * 255 / ramp[0]  # column by column
        assert abs(ratio[:50].mean() - 1) < 0.03 and abs(ratio[-50:].mean() - 1) < 0.03
    else:  # poisson-gaussian: std sigma at mid-grey 0.5
        assert abs(noise.std() * 255 / sigma - 1) < 0.02
    # On any image, noise / predicted std is zero-mean with unit variance.
    img = torch.rand(1000, 1000, generator=g, dtype=torch.float64)
    noise = add_noise(img, sigma, kind=kind, generator=g) - img
    unit = noise / noise_std_map(img, sigma, kind=kind)
    assert abs(unit.mean()) < 0.01 and abs(unit.std() - 1) < 0.02


def test_noise_distribution_shapes():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(1_000_000, dtype=torch.float64)
    s = 30 / 255

    def kurtosis(n):
        return float(((n / n.std()) ** 4).mean())

    assert abs(kurtosis(add_noise(x, 30, generator=g)) - 3) < 0.1
    assert abs(kurtosis(add_noise(x, 30, kind="laplace", generator=g)) - 6) < 0.5
    u = add_noise(x, 30, kind="uniform", generator=g)
    assert u.abs().max() <= math.sqrt(3) * s and abs(kurtosis(u) - 1.8) < 0.05
    dark = torch.full((10**6,), 0.1, dtype=torch.float64)
    pg_dark = add_noise(dark, 30, kind="poisson-gaussian", generator=g)
    assert abs((pg_dark - 0.1).std() / (s * math.sqrt(0.6)) - 1) < 0.02  # Var = s^2 (x + 1/2)


def test_noise_is_seeded_and_not_in_place():
    x = torch.rand(2, 1, 16, 16)
    x0 = x.clone()
    for kind in NOISE_KINDS:
        a = add_noise(x, 15, kind=kind, generator=torch.Generator().manual_seed(7))
        b = add_noise(x, 15, kind=kind, generator=torch.Generator().manual_seed(7))
        c = add_noise(x, 15, kind=kind, generator=torch.Generator().manual_seed(8))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.dtype == x.dtype and a.shape == x.shape
        assert add_noise(x, 15, kind=kind).shape == x.shape  # global generator
    assert torch.equal(x, x0)


def test_noise_is_not_clipped():
    y = add_noise(torch.zeros(64, 64), 50, generator=torch.Generator().manual_seed(0))
    assert y.min() < 0 and (y < 0).float().mean() > 0.4


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_per_image_sigma_broadcasts(kind):
    g = torch.Generator().manual_seed(2)
    x = torch.full((4, 1, 200, 200), 0.5, dtype=torch.float64)
    sigma = torch.tensor([0.0, 5.0, 25.0, 50.0]).view(4, 1, 1, 1)
    noise = add_noise(x, sigma, kind=kind, generator=g) - x
    assert torch.equal(noise[0], torch.zeros_like(noise[0]))  # sigma 0: exactly clean
    stds = noise.flatten(1).std(1)[1:] * 255
    mean_level = noise_std_map(x, sigma, kind=kind).flatten(1).mean(1)[1:] * 255
    torch.testing.assert_close(mean_level, sigma.flatten()[1:].double())
    expected = sigma.flatten()[1:].double() * (math.sqrt(1 + 1 / 12) if kind == "varying" else 1.0)
    assert ((stds / expected - 1).abs() < 0.03).all(), stds  # varying: rms of the ramp


def test_noise_input_errors():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"sigma.*-1"):
        add_noise(x, -1.0)
    with pytest.raises(ValueError, match="sigma"):
        add_noise(x, torch.tensor([5.0, -2.0]).view(2, 1, 1, 1))
    with pytest.raises(ValueError, match="sigma"):
        add_noise(x, float("nan"))
    with pytest.raises(ValueError, match="kind.*'salt'"):
        add_noise(x, 10, kind="salt")
    with pytest.raises(ValueError, match="broadcast"):
        add_noise(x, torch.ones(3))
    with pytest.raises(ValueError, match="broadcast"):
        add_noise(torch.rand(8, 8), torch.ones(2, 1, 1))  # would grow x
    with pytest.raises(ValueError, match="x >= 0"):
        add_noise(x - 1, 10, kind="poisson-gaussian")
    with pytest.raises(ValueError, match="floating"):
        add_noise(torch.zeros(4, dtype=torch.uint8), 10)


@pytest.mark.parametrize("mode, value, suffix", [("RGB", (10, 20, 30), "png"), ("I;16", 40000, "png"),
                                                ("F", 0.5, "tiff"), ("1", 1, "png"), ("P", 3, "png"),
                                                ("LA", (5, 255), "png")])
def test_load_image_refuses_other_modes(tmp_path, mode, value, suffix):
    from PIL import Image

    path = tmp_path / f"x.{suffix}"
    Image.new(mode, (4, 3), value).save(path)
    with pytest.raises(D.DataError, match=f"has mode '{mode}'"):
        D.load_image(path)


def test_load_image_reads_8_bit_grayscale_exactly(tmp_path):
    from PIL import Image

    Image.new("L", (4, 3), 51).save(tmp_path / "x.png")
    im = D.load_image(tmp_path / "x.png")
    assert im.shape == (3, 4) and im.dtype == torch.float32 and torch.all(im == 51 / 255.0)


def test_noise_level_is_bounded():
    with pytest.raises(ValueError, match=r"sigma must be in \[0, 1000\]"):
        D.add_noise(torch.zeros(3), 1e300)
