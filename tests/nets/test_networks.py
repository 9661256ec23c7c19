"""Every built-in network, through one parametrised suite: odd sizes, stride, the split, tracing, checkpoints."""

import math

import pytest
import torch

from taplab.errors import ModelError
from taplab.nets import create_model, list_architectures
from taplab.nets.checkpoint import build_from_checkpoint, read_checkpoint, save_checkpoint

NAMES = [a.name for a in list_architectures()]
EXPECTED_STRIDE = {"bl1": 8, "bl2": 4, "bl3": 8}


def test_registry_has_the_three_baselines():
    assert set(NAMES) >= {"bl1", "bl2", "bl3"}
    with pytest.raises(ModelError, match="unknown network 'bl9'"):
        create_model("bl9")
    with pytest.raises(ModelError, match="num_classes"):
        create_model("bl2", num_classes=1)
    with pytest.raises(ModelError, match="bad arguments"):
        create_model("bl2", no_such_option=3)
    with pytest.raises(ModelError, match="bad arguments"):
        create_model("bl2", dropout=2.0)
    with pytest.raises(ModelError, match="bad arguments"):
        create_model("bl1", widths=[8])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(67, 93), (64, 160), (97, 33)])
def test_forward_on_odd_sizes_reports_stride(name, size):
    torch.manual_seed(0)
    net = create_model(name, num_classes=7).eval()
    h, w = size
    with torch.no_grad():
        out = net(torch.rand(2, 3, h, w))
    s = net.stride
    assert s == EXPECTED_STRIDE[name]
    assert out.shape == (2, 7, math.ceil(h / s), math.ceil(w / s))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, millions", [("bl1", 4.54), ("bl2", 1.86), ("bl3", 46.6)])
def test_parameter_counts_match_the_documented_cost(name, millions):
    net = create_model(name)
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(millions, abs=0.01)
    assert f"{millions} M parameters" in __import__(f"taplab.nets.{name}", fromlist=["_"]).__doc__


@pytest.mark.parametrize("name", NAMES)
def test_head_of_features_is_forward(name):
    torch.manual_seed(1)
    net = create_model(name).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = net.features(x)
        assert features.shape[-2:] == (64 // net.stride, 96 // net.stride)
        assert features.shape[1] != net.num_classes  # an interior layer, not the logits themselves
        torch.testing.assert_close(net.head(features), net(x))


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(2)
    net = create_model(name, num_classes=5, class_names=tuple("abcde")).eval()
    path = save_checkpoint(tmp_path / f"{name}.pt", net, name, {})
    loaded = build_from_checkpoint(read_checkpoint(path))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    assert loaded.class_names == tuple("abcde")


def test_half_precision_checkpoint_is_close_and_smaller(tmp_path):
    torch.manual_seed(3)
    net = create_model("bl2").eval()
    full = save_checkpoint(tmp_path / "full.pt", net, "bl2", {})
    half = save_checkpoint(tmp_path / "half.pt", net, "bl2", {}, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = net(x), build_from_checkpoint(read_checkpoint(half))(x)
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.95


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_bl2_traces_to_torchscript():
    torch.manual_seed(4)
    net = create_model("bl2").eval()
    x = torch.rand(1, 3, 64, 128)
    traced = torch.jit.trace(net, x)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), net(x))


@pytest.mark.parametrize("name", NAMES)
def test_normalisation_is_inside_and_not_in_the_weights(name):
    from taplab.nets.layers import IMAGENET_MEAN, IMAGENET_STD, Normalize

    net = create_model(name, num_classes=3)
    assert not any(k.startswith("normalize.") for k in net.state_dict())  # checkpoints hold weights only
    x = torch.rand(1, 3, 4, 4)
    expected = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize()(x), expected)
