"""Tests of nelu.evaluation: the same noisy images for every model, result rows, timing."""

from __future__ import annotations

import pickle

import pytest
import torch

from nelu.conv import ConvAE
from nelu.evaluation import (
    cores,
    default_workers,
    evaluate_images,
    median_time,
    noise_seed,
    noisy_image,
    parallel_map,
    picklable,
    result_rows,
)


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


IMAGES = [torch.rand(20, 24, generator=torch.Generator().manual_seed(i)) for i in range(2)]


def test_the_noise_depends_only_on_seed_image_and_level():
    a = evaluate_images(Identity(), IMAGES, [10.0, 25.0])
    b = evaluate_images(Identity(), IMAGES, [25.0])
    assert a["psnr"][25.0] == b["psnr"][25.0]  # same noise whatever the other sigmas
    assert a["psnr"][10.0][0] > a["psnr"][25.0][0]
    assert a["psnr"][25.0] == a["noisy_psnr"][25.0]
    assert noise_seed(0, 1, 25) == noise_seed(0, 1, 25.0) != noise_seed(1, 1, 25.0)
    assert torch.equal(noisy_image(IMAGES[1], 1, 25.0), noisy_image(IMAGES[1], 1, 25.0))
    assert not torch.equal(noisy_image(IMAGES[1], 1, 25.0), noisy_image(IMAGES[1], 0, 25.0))


@pytest.mark.parametrize("sigma", [-1.0, float("nan"), 1e300])
def test_bad_levels(sigma):
    with pytest.raises(ValueError, match="sigma"):
        evaluate_images(Identity(), IMAGES, [sigma])


def test_result_rows():
    res = evaluate_images(Identity(), IMAGES, [10.0, 25.0], metrics=("psnr",))
    summary, per_image = result_rows(res, ["a.png", "b.png"])
    assert [r["sigma"] for r in summary] == [10.0, 25.0] and "ssim_mean" not in summary[0]
    assert summary[1]["psnr_mean"] == pytest.approx(sum(res["psnr"][25.0]) / 2)
    assert len(per_image) == 4 and per_image[3] == {"image": "b.png", "sigma": 25.0,
                                                     "noisy_psnr": res["noisy_psnr"][25.0][1],
                                                     "psnr": res["psnr"][25.0][1]}


def test_median_time_measures():
    calls = []
    t = median_time(lambda: calls.append(1), 5, warmup=2)
    assert len(calls) == 7 and 0 <= t < 1


# ---- workers -------------------------------------------------------------------------------


def _square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative {x}")
    return x * x


def test_default_workers_and_parallel_map_in_process():
    assert default_workers(3, 1) == 1 and default_workers(1) == 1 and default_workers(100) == cores()
    seen = []
    assert parallel_map(_square, [3, 1, 2], 1, each=seen.append) == [9, 1, 4] == seen
    with pytest.raises(ValueError, match="negative"):
        parallel_map(_square, [1, -1], 1)


def test_picklable_copies_parametrized_modules_and_leaves_them_working():
    ae = ConvAE(8, 5, "nelu", generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError):
        pickle.dumps(ae)  # NeLU's lam is a parametrization
    y = torch.rand(1, 1, 12, 10, generator=torch.Generator().manual_seed(1))
    copy = pickle.loads(pickle.dumps(picklable(ae)))
    with torch.no_grad():
        assert torch.equal(copy(y), ae(y))
    assert picklable(copy) is copy and float(ae.activation.lam.detach()) == float(copy.activation.lam.detach())
    assert picklable(picklable(ae)) is not ae  # the original is still parametrized ...
    ae.activation.lam = torch.tensor(0.3)  # ... and still works as one
    assert abs(float(ae.activation.lam.detach()) - 0.3) < 1e-7


@pytest.mark.slow  # two spawned processes import torch: 5-20 s
def test_workers_give_bitwise_the_same_numbers():
    """Images spread over 2 single-threaded processes: exactly the floats of one process on one thread."""
    images = [torch.rand(30 + 3 * i, 26, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for act in ("nelu", "nelu-global"):
            den = ConvAE(8, 5, act, generator=torch.Generator().manual_seed(2))
            one = evaluate_images(den, images, [15.0, 50.0], kind="varying")
            two = evaluate_images(den, images, [15.0, 50.0], kind="varying", workers=2)
            assert one == two and len(one["psnr"][15.0]) == 3
        assert parallel_map(_square, [1, 2, 3, 4, 5], workers=2) == [1, 4, 9, 16, 25]
        with pytest.raises(ValueError, match="negative"):
            parallel_map(_square, [1, -2, 3], workers=2)
    finally:
        torch.set_num_threads(old)
