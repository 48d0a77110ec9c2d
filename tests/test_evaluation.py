"""Tests of nelu.evaluation: the same noisy images for every model, result rows, timing."""

from __future__ import annotations

import pytest
import torch

from nelu.evaluation import evaluate_images, median_time, noise_seed, noisy_image, result_rows


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
