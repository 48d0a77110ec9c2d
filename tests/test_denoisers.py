"""The one image-denoiser contract (nelu.models.Denoiser), checked on every denoiser of the package."""

from __future__ import annotations

import pytest
import torch

from nelu.baselines import BM3D, SmallDnCNN
from nelu.conv import ConvAE
from nelu.evaluation import evaluate_images
from nelu.models import Denoiser, PatchDenoiser, SparseAE


def _patch(act: str) -> Denoiser:
    return PatchDenoiser(SparseAE(16, 32, act, generator=torch.Generator().manual_seed(0)), 4, stride=2)


def _dncnn() -> Denoiser:
    torch.manual_seed(0)
    return SmallDnCNN(depth=3, channels=4)


def _bm3d() -> Denoiser:
    pytest.importorskip("bm3d")
    return BM3D()


#: name -> (factory, pivotal: positively homogeneous in the input, with sigma scaled alike)
DENOISERS = {
    "patch-relu": (lambda: _patch("relu"), False),
    "patch-nelu": (lambda: _patch("nelu"), True),
    "conv-relu": (lambda: ConvAE(8, 3, "relu", generator=torch.Generator().manual_seed(0)), False),
    "conv-nelu": (lambda: ConvAE(8, 3, "nelu", generator=torch.Generator().manual_seed(0)), True),
    "conv-nelu-global": (lambda: ConvAE(8, 3, "nelu-global", generator=torch.Generator().manual_seed(0)), True),
    "dncnn": (_dncnn, False),
    "bm3d": (_bm3d, False),
}


@pytest.fixture(params=sorted(DENOISERS))
def case(request):
    make, pivotal = DENOISERS[request.param]
    return request.param, make().eval(), pivotal


def _images(b: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (0.5 + 0.1 * torch.randn(b, 1, 17, 13, generator=g)).double().float()


@torch.no_grad()
def test_shapes_and_batches(case):
    name, den, _ = case
    x = _images()
    out = den(x, sigma=25.0)
    assert isinstance(den, Denoiser) and out.shape == x.shape and out.dtype == x.dtype
    single = den(x[1, 0], sigma=25.0)
    assert single.shape == x.shape[-2:]
    torch.testing.assert_close(single, out[1, 0], rtol=1e-5, atol=1e-5)  # a batch is its images, one by one


@torch.no_grad()
def test_per_image_sigma(case):
    name, den, _ = case
    x = _images()
    out = den(x, sigma=torch.tensor([10.0, 40.0]))
    torch.testing.assert_close(out[1], den(x[1:], sigma=40.0)[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_sigma_is_needed_only_where_declared(case):
    name, den, _ = case
    x = _images(1)
    if den.needs_sigma:
        with pytest.raises(ValueError, match="needs the noise level"):
            den(x)
    else:
        torch.testing.assert_close(den(x), den(x, sigma=60.0))  # ignored


@pytest.mark.parametrize("bad", [torch.rand(3), torch.rand(1, 2, 8, 8), torch.rand(1, 8, 8)])
def test_bad_shapes_are_refused(case, bad):
    name, den, _ = case
    with pytest.raises(ValueError, match="images must"):
        den(bad, sigma=25.0)


def test_images_smaller_than_the_model_are_refused(case):
    name, den, _ = case
    side = den.min_size - 1
    if side < 1:
        pytest.skip("any image size")
    with pytest.raises(ValueError, match=f"at least {den.min_size} pixels"):
        den(torch.rand(side, 20), sigma=25.0)


def test_bad_sigma_is_refused(case):
    name, den, _ = case
    for sigma in (float("nan"), -1.0, torch.tensor([1.0, 2.0, 3.0])):
        with pytest.raises(ValueError, match="sigma"):
            den(_images(), sigma=sigma)


@torch.no_grad()
def test_pivotal_denoisers_are_positively_homogeneous(case):
    """NeLU models set their threshold from the data: scaling the input scales the output."""
    name, den, pivotal = case
    if not pivotal:
        pytest.skip("not pivotal")
    x = _images()
    for c in (0.01, 7.0):
        torch.testing.assert_close(den(c * x), c * den(x), rtol=1e-4, atol=1e-5 * c)


@torch.no_grad()
def test_evaluate_images_tells_sigma_to_a_denoiser():
    seen = []

    class Recorder(Denoiser):
        def denoise(self, x, sigma):
            seen.append(sigma.tolist())
            return x

    evaluate_images(Recorder(), [torch.rand(8, 8)], [5.0, 25.0], metrics=("psnr",))
    assert seen == [[5.0, 25.0]]
