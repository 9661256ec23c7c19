"""CoNet, the correction network: shapes, its identity start, batch-norm folding, its files."""

import pytest
import torch

from taplab.errors import ModelError
from taplab.nets.conet import CoNet, Correction, export_correction, load_correction, read_correction, save_correction
from taplab.nets.layers import fold_batchnorm
from taplab.nets.loader import load_model


def _trained_like(seed: int = 0) -> CoNet:
    """A CoNet with random weights everywhere (delta head and batch-norm statistics included)."""
    torch.manual_seed(seed)
    net = CoNet(19)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    torch.nn.init.normal_(net.delta.weight, std=0.5)
    return net.eval()


def test_shapes_at_odd_sizes_and_an_untrained_conet_leaves_the_warped_logits_unchanged():
    net = CoNet(7).eval()
    warped = torch.randn(2, 7, 13, 21)
    updated, edge = net(torch.rand(2, 3, 50, 83), warped, torch.rand(2, 1, 13, 21))
    assert updated.shape == (2, 7, 13, 21) and edge.shape == (2, 1, 13, 21)
    assert torch.equal(updated, warped)  # the delta head starts at zero


def test_folding_batch_norm_computes_the_same():
    net = _trained_like()
    x = (torch.rand(1, 3, 64, 96), torch.randn(1, 19, 32, 48), torch.rand(1, 1, 32, 48))
    with torch.no_grad():
        before = net(*x)
        after = fold_batchnorm(net)(*x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_save_load_export_round_trip(tmp_path):
    net = _trained_like()
    classes = tuple(f"c{k}" for k in range(19))
    path = save_correction(tmp_path / "run.pt", net, classes, 4, "bl2-synth", optimizer={"x": 1}, epoch=3)
    x = (torch.rand(3, 40, 64), torch.randn(19, 20, 32), torch.rand(20, 32))
    with torch.no_grad():
        ref_updated, ref_edge = net(x[0][None], x[1][None], x[2][None, None])
    for f in (path, export_correction(path, tmp_path / "m.conet.pt")):
        corr = load_correction(f)
        updated, edge = corr(*x)
        tol = 1e-4 if f == path else 5e-2  # the export holds float16 weights
        torch.testing.assert_close(updated, ref_updated[0], atol=tol, rtol=tol)
        torch.testing.assert_close(edge, torch.sigmoid(ref_edge[0, 0]), atol=tol, rtol=tol)
        assert corr.classes == classes and corr.stride == 4
    exported = read_correction(tmp_path / "m.conet.pt")
    assert "optimizer" not in exported and exported["epoch"] == 3 and exported["base"] == "bl2-synth"


def test_bad_files_and_a_mismatched_model_are_clear_errors(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="not a readable correction network"):
        load_correction(bad)
    torch.save({"format": "taplab-checkpoint"}, tmp_path / "seg.pt")
    with pytest.raises(ModelError, match="not a taplab correction network"):
        load_correction(tmp_path / "seg.pt")
    crafted = save_correction(tmp_path / "crafted.conet.pt", CoNet(5), tuple(f"c{k}" for k in range(19)), 4, "default")
    with pytest.raises(ModelError, match="for 5 classes cannot carry 19 class names"):
        load_correction(crafted)  # it once passed the class check and failed after output was written
    with pytest.raises(ModelError, match="cannot carry 19 class names"):
        export_correction(crafted, tmp_path / "out.conet.pt")
    assert not (tmp_path / "out.conet.pt").exists()
    model = load_model("default")
    corr = Correction(CoNet(5), tuple("abcde"), 4, "five.conet.pt")
    with pytest.raises(ModelError, match="trained for 5 classes at stride 4"):
        corr.check(model)


def test_a_correction_network_is_found_beside_its_model_and_is_not_a_model_itself(tmp_path):
    from taplab.nets.zoo import find_correction, shipped_models

    assert "bl2-synth.conet" not in shipped_models() and "bl2-synth" in shipped_models()
    assert find_correction("default").name == "bl2-synth.conet.pt"
    model = tmp_path / "mine.pt"
    model.write_bytes(b"")
    assert find_correction(str(model)) is None
    (tmp_path / "mine.conet.pt").write_bytes(b"")
    assert find_correction(str(model)) == tmp_path / "mine.conet.pt"
    assert find_correction("bl2") is None and find_correction(torch.nn.Identity()) is None


def test_correction_image_is_the_frame_at_twice_the_grid():
    import numpy as np

    from taplab.nets.conet import IMAGE_SCALE, correction_image

    frame = np.random.default_rng(0).integers(0, 256, (130, 250, 3), np.uint8)
    small = correction_image(frame, (33, 63))  # a stride-4 model's grid, rounded up
    assert IMAGE_SCALE == 2 and small.shape == (66, 126, 3) and small.dtype == np.uint8
    np.testing.assert_array_equal(correction_image(small, (33, 63)), small)  # already at that size: unchanged
    updated, edge = CoNet(19).eval()(torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255,
                                     torch.randn(1, 19, 33, 63), torch.rand(1, 1, 33, 63))
    assert updated.shape == (1, 19, 33, 63) and edge.shape == (1, 1, 33, 63)


def test_normalisation_is_not_in_the_weights():
    assert not any(k.startswith("normalize.") for k in CoNet(19).state_dict())  # files hold weights only


def test_half_grid_conet_shapes_identity_start_and_round_trip(tmp_path):
    import numpy as np

    from taplab.nets.conet import correction_image, image_size
    from taplab.nets.zoo import find_correction

    net = CoNet(7, width=8, scale=2).eval()
    warped = torch.randn(2, 7, 13, 21)  # odd: the half grid is 7x11, rounded up
    assert image_size((13, 21), 2) == (14, 22) and image_size((13, 21), 1) == (26, 42)
    updated, edge = net(torch.rand(2, 3, 14, 22), warped, torch.rand(2, 1, 13, 21))
    assert updated.shape == warped.shape and edge.shape == (2, 1, 13, 21) and torch.equal(updated, warped)
    torch.nn.init.normal_(net.delta.weight, std=0.5)
    path = save_correction(tmp_path / "half.pt", net, tuple("abcdefg"), 4, "x")
    corr = load_correction(path)
    assert corr.scale == 2 and corr.net.scale == 2
    frame = np.zeros((52, 84, 3), np.uint8)
    image = torch.from_numpy(correction_image(frame, (13, 21), corr.scale)).permute(2, 0, 1).float()
    assert image.shape == (3, 14, 22)
    with torch.no_grad():
        ref, _ = net(image[None], warped[:1], torch.zeros(1, 1, 13, 21))
    torch.testing.assert_close(corr(image, warped[0], torch.zeros(13, 21))[0], ref[0], atol=1e-4, rtol=1e-4)
    assert not torch.equal(ref, warped[:1])
    # files written before the scale existed load at scale 1
    assert load_correction(find_correction("default")).scale == 1
    with pytest.raises(ModelError, match="scale"):
        CoNet(7, scale=3)
