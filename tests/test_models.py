"""Tests of nelu.models: the sparse auto-encoder, the patch denoiser, checkpoint loading."""

from __future__ import annotations

import pytest
import torch

from nelu.functional import universal_lam
from nelu.models import (
    CheckpointError,
    PatchDenoiser,
    SparseAE,
    load_checkpoint,
    load_denoiser,
    make_activation,
)
from nelu.nn import NeLU, ShiftedReLU


@pytest.mark.parametrize("remove_dc", [True, False])
def test_relu_ae_starts_as_identity(remove_dc):
    ae = SparseAE(16, 40, "relu", remove_dc=remove_dc, generator=torch.Generator().manual_seed(1))
    y = torch.randn(50, 16)
    torch.testing.assert_close(ae(y), y, atol=1e-5, rtol=1e-5)


def test_init_is_paired_and_zero_mean_rows():
    ae = SparseAE(16, 32, "relu")
    W = ae.encoder.weight.detach()
    torch.testing.assert_close(W[:16], -W[16:])
    torch.testing.assert_close(W.sum(1), torch.zeros(32), atol=1e-5, rtol=0)  # DC removed
    torch.testing.assert_close(W.norm(dim=1), torch.ones(32))


@pytest.mark.parametrize("act", ["relu", "nelu"])
def test_dc_is_added_back(act):
    ae = SparseAE(16, 32, act)
    with torch.no_grad():
        ae.encoder.weight.normal_()
    y = torch.randn(8, 16)
    torch.testing.assert_close(ae(y + 3.0), ae(y) + 3.0, atol=1e-4, rtol=1e-4)


def test_signed_ae_has_unpaired_atoms_and_starts_near_the_identity():
    ae = SparseAE(16, 32, "snelu", generator=torch.Generator().manual_seed(1))
    W = ae.encoder.weight.detach()
    assert not ae.activation.nonneg and ae.activation.learned()["lam"] == pytest.approx(universal_lam(32), rel=1e-6)
    assert (W[:16] + W[16:]).abs().max() > 0.1  # no +v / -v pairs
    torch.testing.assert_close(W.sum(1), torch.zeros(32), atol=1e-5, rtol=0)
    y = torch.randn(50, 16, generator=torch.Generator().manual_seed(2))
    yc = y - y.mean(-1, keepdim=True)
    torch.testing.assert_close(ae.decoder(ae.encoder(yc)), yc, atol=1e-5, rtol=1e-5)  # D W = I on zero-mean patches
    z = ae.code(10 * (W[0] - W[1]) + 0.1 * y[0])  # two strong coefficients of opposite signs
    assert z[0] > 0 > z[1]  # signed codes


def test_make_activation():
    assert isinstance(make_activation("relu", 8), ShiftedReLU)
    nel = make_activation("nelu", 256)
    assert isinstance(nel, NeLU) and float(nel.lam.detach()) == pytest.approx(universal_lam(256), rel=1e-6)
    with pytest.raises(ValueError, match="unknown activation"):
        make_activation("gelu", 8)


def test_nelu_ae_gradients_are_finite():
    ae = SparseAE(16, 32, "nelu")
    y = torch.randn(64, 16)
    y[0] = 0.0  # a flat patch: zero code
    loss = ((ae(y) - y) ** 2).mean()
    loss.backward()
    for p in ae.parameters():
        assert torch.isfinite(p.grad).all()


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("stride", [1, 3, 4])
def test_patch_denoiser_shapes_and_identity(stride):
    x = torch.rand(2, 1, 21, 17)
    den = PatchDenoiser(_Identity(), 4, stride, chunk=37)
    torch.testing.assert_close(den(x), x)
    torch.testing.assert_close(den(x[0, 0]), x[0, 0])
    assert den(x[0, 0]).shape == (21, 17)


def test_patch_denoiser_chunk_invariant():
    ae = SparseAE(16, 32, "nelu")
    x = torch.rand(1, 1, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(PatchDenoiser(ae, 4, 2, chunk=7)(x), PatchDenoiser(ae, 4, 2, chunk=10**6)(x))


@pytest.mark.parametrize("activation", ["relu", "nelu", "wnelu"])
def test_patch_denoiser_output_is_bitwise_the_same_for_every_chunk(activation):
    """The chunk is a speed setting only: 3249 patches of 64 pixels, m = 256, in chunks below and
    above the size where the exact NeLU compacts its rows (2**17 codes), give identical images."""
    ae = SparseAE(64, 256, activation, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = [PatchDenoiser(ae, 8, 1, chunk=chunk)(x) for chunk in (100, 1024, 4096)]
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_patch_denoiser_rejects_bad_input():
    with pytest.raises(ValueError):
        PatchDenoiser(_Identity(), 4, 5)
    with pytest.raises(ValueError):
        PatchDenoiser(_Identity(), 4, 2)(torch.rand(2, 3, 10, 10))


def _fake_checkpoint(path, **changes):
    from nelu.models import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, build_model

    cfg = {"activation": "nelu", "patch": 4, "m": 24, "seed": 0, "eval_stride": 2}
    model = build_model(cfg)
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": cfg, "model": model.state_dict()}
    ckpt.update(changes)
    torch.save(ckpt, path)
    return model


def test_load_denoiser_round_trip(tmp_path):
    model = _fake_checkpoint(tmp_path / "a.pt")
    den = load_denoiser(tmp_path / "a.pt")
    assert isinstance(den, PatchDenoiser) and den.stride == 2 and not den.training
    y = torch.rand(10, 16)
    with torch.no_grad():
        torch.testing.assert_close(den.ae(y), model(y))
    assert load_denoiser(tmp_path / "a.pt", stride=1).stride == 1


def test_load_errors(tmp_path):
    assert issubclass(CheckpointError, ValueError)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_denoiser(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_denoiser(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a nelu checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    _fake_checkpoint(tmp_path / "v.pt", version=99)
    with pytest.raises(CheckpointError, match="version"):
        load_denoiser(tmp_path / "v.pt")
    _fake_checkpoint(tmp_path / "m.pt")
    ck = torch.load(tmp_path / "m.pt", weights_only=False)
    ck["config"]["m"] = 32  # weights no longer fit
    torch.save(ck, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_denoiser(tmp_path / "m.pt")
