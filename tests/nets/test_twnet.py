"""The Tamed Warping Network's split of the models and its correction network (taplab.nets.twnet), on the shipped
model and real networks."""

import numpy as np
import pytest
import torch

from taplab.errors import ModelError
from taplab.nets.loader import load_model
from taplab.nets.registry import create_model
from taplab.nets.twnet import Split, Tamed, TamedNet, is_tamed, load_tamed, residual_cells, save_tamed


@pytest.fixture(scope="module")
def model():
    return load_model("default", device="cpu", engine="torch")


def test_bl2s_split_finishes_its_forward_pass(model):
    net = model.module
    x = torch.rand(2, 3, 128, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits, shallow, deep = net.interior(x)
        assert torch.allclose(logits, net(x), atol=1e-4)
        assert torch.allclose(net.decode(shallow, deep), net(x), atol=1e-4)  # a size the padding leaves alone
        assert torch.equal(net.shallow(x), shallow)
    # shallow: the encoder's stride-4 stage; deep: the finest level's context and the deeper levels' logits
    assert shallow.shape == (2, 24, 32, 64) and deep.shape == (2, 64 + model.num_classes, 32, 64)


def test_a_padded_size_differs_only_on_the_last_row_and_column(model):
    x = torch.rand(1, 3, 100, 200, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits, shallow, deep = model.module.interior(x)
        decoded = model.module.decode(shallow, deep)
    assert torch.allclose(logits, model.module(x), atol=1e-4)
    assert torch.allclose(decoded[..., :-1, :-1], logits[..., :-1, :-1], atol=1e-4)


def test_networks_without_the_split_say_so():
    assert create_model("bl2", num_classes=5).has_interior
    assert not create_model("bl1", num_classes=5).has_interior and not create_model("bl3", num_classes=5).has_interior


def test_the_state_carries_the_cnns_logits_and_the_interior(model):
    split = Split(model)
    assert split.native and (split.shallow_channels, split.deep_channels) == (24, 83)
    x = torch.rand(1, 3, 96, 160, generator=torch.Generator().manual_seed(2))
    state = split.state(x)
    assert state.shape == (1, model.num_classes + 83, 24, 40)
    torch.testing.assert_close(split.logits(state[0]), model.logits(x)[0], atol=1e-4, rtol=0)
    with torch.inference_mode():  # the runtime's; training decodes outside it, with tensors of its own
        decoded = split.decode(split.shallow(x, (24, 40)), split.deep(state))
    torch.testing.assert_close(decoded, model.logits(x), atol=1e-3, rtol=0)


def test_a_model_without_the_split_falls_back_to_logits():
    torch.manual_seed(0)
    plain = load_model(torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.AvgPool2d(4)), device="cpu")
    split = Split(plain)
    assert not split.native and (split.shallow_channels, split.deep_channels) == (3, 5)
    x = torch.rand(1, 3, 64, 96)
    state = split.state(x)
    torch.testing.assert_close(split.logits(state), plain.logits(x))
    torch.testing.assert_close(split.deep(state), plain.logits(x))
    shallow = split.shallow(x, (16, 24))
    torch.testing.assert_close(shallow[0, :, 0, 0], x[0, :, :4, :4].mean((1, 2)))  # the cell's mean colour
    assert split.decode(shallow, state) is state


def test_an_untrained_tamednet_leaves_the_interior_as_warped():
    net = TamedNet(deep=10, shallow=4, width=8).eval()
    warped, shallow, residual = torch.randn(2, 10, 6, 7), torch.randn(2, 4, 6, 7), torch.rand(2, 2, 6, 7)
    corrected, attention = net(warped, shallow, residual)
    assert torch.equal(corrected, warped)
    assert torch.allclose(attention, torch.full_like(attention, 0.5))


def test_the_correction_goes_where_the_attention_is():
    net = TamedNet(deep=3, shallow=2, width=4).eval()
    with torch.no_grad():
        net.cfr[-1].bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
        net.rga[-1].bias.fill_(100.0)  # A = 1 everywhere
    corrected, attention = net(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    assert torch.allclose(attention, torch.ones_like(attention))
    assert torch.allclose(corrected[0, :, 0, 0], torch.tensor([1.0, 2.0, 3.0]))


def test_residual_cells():
    residual = np.zeros((8, 8), np.uint8)
    residual[:4, :4] = 255  # the top-left cell of a 2x2 grid: all above any threshold
    residual[4:, 4:] = 10
    cells = residual_cells(residual, (2, 2), 30.0)
    assert cells.shape == (2, 2, 2)
    torch.testing.assert_close(cells[0], torch.tensor([[1.0, 0.0], [0.0, 10 / 255]]))
    torch.testing.assert_close(cells[1], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_an_untrained_tamed_reproduces_the_cnn_on_its_own_frame(model):
    split = Split(model)
    tamed = Tamed(TamedNet(split.deep_channels, split.shallow_channels), model.class_names, model.stride, "<untrained>")
    tamed.check(model)
    x = torch.rand(1, 3, 128, 192, generator=torch.Generator().manual_seed(3))
    state = split.state(x)[0]
    out, attention = tamed(x, state, residual_cells(np.zeros((128, 192), np.uint8), (32, 48), 30.0))
    assert out.shape == state.shape and attention.shape == (32, 48)
    assert torch.equal(out[model.num_classes:], state[model.num_classes:])  # CFR starts at zero
    torch.testing.assert_close(out[:model.num_classes], state[:model.num_classes], atol=1e-3, rtol=0)


def test_files_round_trip_and_belong_to_one_model(model, tmp_path):
    split = Split(model)
    net = TamedNet(split.deep_channels, split.shallow_channels, width=8)
    with torch.no_grad():
        net.cfr[-1].bias.normal_()
    path = save_tamed(tmp_path / "m.twnet.pt", net, model.class_names, model.stride, "default")
    assert is_tamed(path) and not is_tamed(tmp_path / "missing.pt")
    loaded = load_tamed(path)
    loaded.check(model)
    assert torch.equal(loaded.net.cfr[-1].bias, net.cfr[-1].bias) and loaded.net.width == 8
    other = load_model(torch.nn.Sequential(torch.nn.Conv2d(3, 19, 3, padding=1), torch.nn.AvgPool2d(4)), device="cpu")
    with pytest.raises(ModelError, match="trained for another model"):
        loaded.check(other)
    (tmp_path / "bad.pt").write_bytes(b"not torch")
    with pytest.raises(ModelError):
        load_tamed(tmp_path / "bad.pt")


def test_the_split_runs_on_the_models_engine(model):
    engine = load_model("default", device="cpu")  # ONNX Runtime where it agrees with torch
    split, reference = Split(engine), Split(model)
    assert (split._interior is not None) == (engine.engine == "onnxruntime")
    x = torch.rand(1, 3, 96, 160, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(split.state(x), reference.state(x), atol=1e-3, rtol=0)
    torch.testing.assert_close(split.shallow(x, (24, 40)), reference.shallow(x, (24, 40)), atol=1e-3, rtol=0)
