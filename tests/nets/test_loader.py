"""load_model: every kind of spec, the contract check, and the errors that name what is wrong."""

import numpy as np
import pytest
import torch

from taplab.errors import ConfigError, ModelError, TapLabWarning
from taplab.nets import create_model
from taplab.nets.checkpoint import save_checkpoint
from taplab.nets.loader import Geometry, Model, load_model
from tests.nets.user_models import Normalised, NotLogits, ReturnsDict, TinySegmenter


def test_user_module_geometry_and_prediction():
    model = load_model(TinySegmenter())
    assert (model.num_classes, model.stride, model.has_split) == (5, 2, False)
    assert model.class_names == tuple(f"class {k}" for k in range(5))
    assert model.geometry(33, 47).size == (17, 24)
    image = np.random.default_rng(0).integers(0, 256, (33, 47, 3), np.uint8)
    labels = model.predict(image)
    assert labels.shape == (33, 47) and labels.dtype == np.uint8 and labels.max() < 5
    # the prediction is the arg-max of the module's own (upsampled) logits
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        up = torch.nn.functional.interpolate(model.module(x), size=(33, 47), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(labels, up.argmax(1)[0].numpy())


def test_mean_std_attributes_are_applied():
    module = Normalised()
    model = load_model(module)
    x = torch.rand(1, 3, 16, 16)
    mean, std = torch.tensor(module.mean).view(1, 3, 1, 1), torch.tensor(module.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(x), module((x - mean) / std))


def test_features_head_split_is_used_when_present():
    net = create_model("bl2", num_classes=3)
    model = load_model(net)
    assert model.has_split
    x = torch.rand(1, 3, 64, 64)
    f = model.features(x)
    assert f.shape[1] == 64
    torch.testing.assert_close(model.head(f), model.logits(x))
    # without a split, features are the logits and head is the identity
    plain = load_model(TinySegmenter())
    torch.testing.assert_close(plain.head(plain.features(x)), plain.logits(x))


def test_torchscript_file(tmp_path):
    module = TinySegmenter().eval()
    path = tmp_path / "scripted.pt"
    torch.jit.script(module).save(str(path))
    model = load_model(path, device="cpu")  # where the reference runs, also on a machine with a GPU
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(x), module(x))
    assert model.stride == 2


def test_factory_spec():
    model = load_model("tests.nets.user_models:make")
    assert (model.num_classes, model.stride) == (5, 2)
    assert model.source == "tests.nets.user_models:make"


def test_taplab_checkpoint_keeps_class_metadata(tmp_path):
    torch.manual_seed(0)
    net = create_model("bl1", num_classes=3, class_names=("road", "car", "sky"), colors=[(1, 2, 3), (4, 5, 6), (7, 8, 9)])
    path = save_checkpoint(tmp_path / "m.pt", net, "bl1", {})
    model = load_model(path, num_classes=3)
    assert model.class_names == ("road", "car", "sky")
    assert model.colors == ((1, 2, 3), (4, 5, 6), (7, 8, 9))
    assert model.stride == 8


def test_builtin_name_is_untrained_and_warns():
    with pytest.warns(TapLabWarning, match="untrained"):
        model = load_model("bl2")
    assert (model.num_classes, model.stride) == (19, 4)


def test_model_instance_passes_through():
    model = load_model(TinySegmenter())
    assert load_model(model) is model


@pytest.mark.parametrize("module, message", [
    (NotLogits(), "must be 4-D float logits"),
    (ReturnsDict(), "output is dict, not a tensor"),
    (torch.nn.Conv2d(3, 1, 1), "1 channel"),
    (torch.nn.Conv2d(4, 2, 1), "forward pass on a \\(1, 3, 128, 256\\) input failed"),
])
def test_contract_violations(module, message):
    with pytest.raises(ModelError, match=message):
        load_model(module)


def test_stride_of_small_inputs_that_fit_several():
    # 66x130 at stride 8 rounds up to 9x17; 66 / 9 = 7.3 must not be taken for the stride
    model = load_model(create_model("bl1"))
    assert model.geometry(66, 130) == Geometry(8, 19, (9, 17))
    assert model.geometry(8, 8).stride == 8  # 1x1 output: any stride >= 8 would fit; the known one wins


def test_irregular_output_size_is_rejected():
    class Crops(torch.nn.Module):
        def forward(self, x):
            return x[:, :2, : x.shape[2] // 2, : x.shape[3] // 3]

    with pytest.raises(ModelError, match="one integer stride"):
        load_model(Crops())


def test_file_errors(tmp_path):
    with pytest.raises(ModelError, match="no model 'nowhere.pt'"):
        load_model("nowhere.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    with pytest.raises(ModelError, match="not a readable checkpoint") as error:
        load_model(text)
    assert "weights_only" not in str(error.value)  # torch's advice to load it unsafely is never repeated (issue 17)
    bare = tmp_path / "bare.pt"
    torch.save(TinySegmenter().state_dict(), bare)
    with pytest.raises(ModelError, match="not a taplab checkpoint"):
        load_model(bare)
    with pytest.raises(ModelError, match="is a folder"):
        load_model(tmp_path)


def test_class_count_mismatches(tmp_path):
    net = create_model("bl2", num_classes=4)
    path = save_checkpoint(tmp_path / "m.pt", net, "bl2", {})
    with pytest.raises(ModelError, match="class count does not match: the model outputs 4 classes, 19 expected"):
        load_model(path, num_classes=19)
    # metadata that disagrees with the weights
    data = torch.load(path, weights_only=True)
    data["classes"] = data["classes"][:3]
    torch.save(data, tmp_path / "names.pt")
    with pytest.raises(ModelError, match="class count does not match: 4 outputs but 3 class names"):
        load_model(tmp_path / "names.pt")
    data["classes"], data["arch_args"]["num_classes"] = ["a"] * 6, 6
    torch.save(data, tmp_path / "weights.pt")
    with pytest.raises(ModelError, match="weights do not fit network 'bl2' with 6 classes"):
        load_model(tmp_path / "weights.pt")


def test_factory_errors():
    with pytest.raises(ModelError, match="cannot import no_such_package"):
        load_model("no_such_package.models:make")
    with pytest.raises(ModelError, match="has no 'missing'"):
        load_model("tests.nets.user_models:missing")
    with pytest.raises(ModelError, match="returned a str, not a torch.nn.Module"):
        load_model("tests.nets.user_models:make_not_a_module")
    with pytest.raises(ModelError, match="the factory raised RuntimeError: weights file missing"):
        load_model("tests.nets.user_models:make_broken")


def test_bad_spec_type_and_device():
    with pytest.raises(ModelError, match="cannot load a model from a int"):
        load_model(3)
    with pytest.raises(ConfigError, match="unknown device"):
        load_model(TinySegmenter(), device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch has no CUDA"):
            load_model(TinySegmenter(), device="cuda")


def test_model_wrapper_is_public_type():
    assert isinstance(load_model(TinySegmenter()), Model)


def test_predict_reads_an_image_file(tmp_path):
    import cv2

    model = load_model(TinySegmenter())
    image = np.random.default_rng(1).integers(0, 256, (24, 40, 3), np.uint8)
    path = tmp_path / "frame.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # on disk in OpenCV's BGR order
    expected = model.predict(image)
    np.testing.assert_array_equal(model.predict(path), expected)
    np.testing.assert_array_equal(model.predict(str(path)), expected)


def test_predict_names_what_it_cannot_take(tmp_path):
    model = load_model(TinySegmenter())
    with pytest.raises(ConfigError, match="cannot read image .*missing.jpg: no such file"):
        model.predict(tmp_path / "missing.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ConfigError, match="cannot read image .*notes.png"):
        model.predict(str(tmp_path / "notes.png"))
    for bad, got in [(np.zeros((8, 8, 3), np.float32), "float32 array of shape \\(8, 8, 3\\)"),
                     (np.zeros((8, 8), np.uint8), "uint8 array of shape \\(8, 8\\)"),
                     (np.zeros((8, 8, 4), np.uint8), "shape \\(8, 8, 4\\)"),
                     ([np.zeros((8, 8, 3), np.uint8)], "got a list")]:
        with pytest.raises(ConfigError, match=f"predict\\(\\) takes uint8 RGB images .*{got}"):
            model.predict(bad)


def test_auto_device():
    from taplab.nets.loader import resolve_device

    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    # a module or Model given as such stays on its device; a name or file goes where "auto" says
    assert load_model(TinySegmenter()).device == torch.device("cpu")
    assert load_model(RedOnly()).device == torch.device("cpu")  # no weights: the CPU
    with pytest.warns(TapLabWarning, match="untrained"):
        assert load_model("bl2").device.type == resolve_device("auto").type


class RedOnly(torch.nn.Module):
    """A module without weights or buffers: two classes from the red channel, stride 1."""

    def forward(self, x):
        return torch.cat([x[:, :1], 1 - x[:, :1]], 1)


class Payload:
    """A pickled object: what a malicious model file holds (loading it with weights_only=False would run code)."""

    def __reduce__(self):
        return (print, ("this would have run",))


def test_a_file_holding_objects_is_refused_without_advising_unsafe_loading(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "taplab-checkpoint", "payload": Payload()}, path)
    with pytest.raises(ModelError) as error:
        load_model(path)
    message = str(error.value)
    assert "never loads" in message and "weights_only" not in message and "arbitrary code" not in message
