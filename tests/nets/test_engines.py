"""Inference engines: torch and ONNX Runtime give the same labels, exported graphs are cached by weights, a model
that does not export or disagrees falls back to torch with a warning, and ONNX files from elsewhere load."""

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from taplab.cli import main
from taplab.data.synth import SynthConfig, generate
from taplab.errors import ConfigError, ModelError, TapLabWarning
from taplab.nets.conet import load_correction
from taplab.nets.engines import AGREEMENT, candidates, label_agreement
from taplab.nets.loader import load_model
from taplab.nets.onnx import cache_dir
from taplab.nets.registry import create_model
from taplab.nets.zoo import find_correction
from tests.nets.user_models import TinySegmenter

SCENE = SynthConfig(height=256, width=512, frames=1, seed=424_242)


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return next(iter(generate(SCENE))).image


@pytest.fixture(scope="module")
def engines():
    return {e: load_model("default", device="cpu", engine=e) for e in ("torch", "onnxruntime")}


def test_candidates_try_the_named_engine_then_torch():
    cpu = torch.device("cpu")
    assert candidates("auto", cpu) == ("onnxruntime", "torch")
    assert candidates("onnxruntime", cpu) == ("onnxruntime", "torch")
    assert candidates("torch", cpu) == ("torch",)
    with pytest.raises(ConfigError, match="unknown engine 'tensorrt'"):
        candidates("tensorrt", cpu)


def test_the_default_model_runs_in_onnxruntime_by_default_with_torchs_labels(engines, scene):
    assert load_model("default", device="cpu").engine == "onnxruntime"  # auto
    torch_, ort = engines["torch"], engines["onnxruntime"]
    assert (torch_.engine, ort.engine) == ("torch", "onnxruntime")
    assert (ort.num_classes, ort.stride, ort.class_names) == (torch_.num_classes, torch_.stride, torch_.class_names)
    a, b = torch_.predict(scene), ort.predict(scene)
    assert (a == b).mean() >= AGREEMENT
    assert len(np.unique(a)) >= 5  # a real scene: the agreement is not that of one class everywhere


@pytest.mark.parametrize("size", [(64, 96), (100, 150), (136, 200), (256, 512)])
def test_an_exported_graph_has_dynamic_height_and_width(engines, size):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, *size, generator=g)
    a, b = engines["torch"].logits(x), engines["onnxruntime"].logits(x)
    assert a.shape == b.shape == (1, 19, -(-size[0] // 4), -(-size[1] // 4))
    torch.testing.assert_close(b, a.contiguous(), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", ["bl1", "bl2", "bl3"])
def test_every_built_in_network_exports_and_agrees_at_any_size(name):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = create_model(name)  # untrained: what matters here is that the graph computes what torch does
    model = load_model(net, device="cpu", engine="onnxruntime")
    assert model.engine == "onnxruntime"  # bl1 and bl3 pool adaptively: exported from an integral image
    for size in [(100, 150), (200, 328)]:
        x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            reference = model.module(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(model.logits(x), reference.contiguous(), atol=1e-4, rtol=1e-4)


def test_the_features_head_split_runs_in_the_engine_too(engines, scene):
    from taplab.data.transforms import to_tensor

    x = to_tensor(scene)
    ort = engines["onnxruntime"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TapLabWarning)  # a split that falls back to torch would compare torch to torch
        split = ort.head(ort.features(x))
    assert label_agreement(split, engines["torch"].logits(x)) >= AGREEMENT
    assert ort.features(x).shape[1] != 19  # an interior layer, not the logits


def test_an_export_is_cached_by_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TAPLAB_CACHE", str(tmp_path))
    net = TinySegmenter()
    load_model(net, engine="onnxruntime")
    files = sorted((tmp_path / "onnx").glob("logits-*.onnx"))
    assert len(files) == 1 and cache_dir() == tmp_path
    stamp = files[0].stat().st_mtime_ns
    assert load_model(TinySegmenter(), engine="onnxruntime").engine == "onnxruntime"  # same weights: same file
    assert sorted((tmp_path / "onnx").glob("logits-*.onnx")) == files and files[0].stat().st_mtime_ns == stamp
    changed = TinySegmenter()
    with torch.no_grad():
        changed.body[0].weight.mul_(2)
    load_model(changed, engine="onnxruntime")
    assert len(list((tmp_path / "onnx").glob("logits-*.onnx"))) == 2


def test_a_read_only_cache_exports_in_memory(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("TAPLAB_CACHE", str(blocked))
    assert load_model(TinySegmenter(), engine="onnxruntime").engine == "onnxruntime"


class PyramidPooled(TinySegmenter):
    """Adaptive pooling on an input of dynamic size: torch's exporter cannot write it (PSPNet's pyramid pooling)."""

    def forward(self, x):
        y = self.body(x)
        return y + nn.functional.interpolate(nn.functional.adaptive_avg_pool2d(y, 3), size=y.shape[-2:])


class SizeBranch(TinySegmenter):
    """A Python branch on the input's width: a trace keeps the branch of the size it was traced at."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, x):
        y = self.body(x)
        return -y if x.shape[-1] >= self.width else y


def test_a_model_that_does_not_export_falls_back_to_torch_with_one_warning():
    with pytest.warns(TapLabWarning, match="onnxruntime cannot run it .*running it with torch") as caught:
        model = load_model(PyramidPooled())
    assert model.engine == "torch" and len([w for w in caught if issubclass(w.category, TapLabWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model(PyramidPooled(), engine="torch").engine == "torch"  # asked for torch: nothing to say


def test_a_graph_that_disagrees_on_the_probe_falls_back_to_torch():
    # traced at 200 pixels wide (>= 150: negated); the 256-wide probe is negated by torch too, so make the branch
    # flip between the trace and the probe
    with pytest.warns(TapLabWarning, match=r"gives torch's labels on \d+\.\d% of a probe"):
        model = load_model(SizeBranch(width=250))
    assert model.engine == "torch"


def test_a_graph_that_disagrees_at_a_new_size_falls_back_to_torch_there():
    model = load_model(SizeBranch(width=400))  # the trace (200) and the probe (256) both take the same branch
    assert model.engine == "onnxruntime"
    with pytest.warns(TapLabWarning, match="of a 96x512 probe"):
        model.geometry(96, 512)
    assert model.engine == "torch"
    x = torch.rand(1, 3, 96, 512)
    torch.testing.assert_close(model.logits(x), -model.module.body(x))  # the branch torch takes at this width


def test_the_correction_network_agrees_in_both_engines():
    path = find_correction("default")
    torch_, ort = load_correction(path, "cpu", "torch"), load_correction(path, "cpu", "onnxruntime")
    assert (torch_.engine, ort.engine, load_correction(path, "cpu", "auto").engine) == ("torch", "onnxruntime", "torch")
    g = torch.Generator().manual_seed(5)
    image, warped = torch.rand(3, 96, 160, generator=g), 3 * torch.randn(19, 48, 80, generator=g)
    coarse = (torch.rand(48, 80, generator=g) > 0.6).float()
    (u0, e0), (u1, e1) = torch_(image, warped, coarse), ort(image, warped, coarse)
    torch.testing.assert_close(u1, u0, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(e1, e0, atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------ ONNX files


def outside_onnx(path, classes=("sky", "grass", "brick"), palette=((0, 0, 255), (0, 255, 0), (255, 0, 0)),
                 size=("h", "w")):
    """An ONNX model written with the onnx package alone, as another framework would: a 1x1 convolution scoring
    each class by one colour channel (red -> brick, green -> grass, blue -> sky), then 4x4 average pooling."""
    weight = np.zeros((3, 3, 1, 1), np.float32)
    weight[0, 2], weight[1, 1], weight[2, 0] = 10, 10, 10  # class k reads channel 2 - k
    nodes = [helper.make_node("Conv", ["input", "w"], ["scores"]),
             helper.make_node("AveragePool", ["scores"], ["output"], kernel_shape=[4, 4], strides=[4, 4])]
    graph = helper.make_graph(
        nodes, "colours",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, *size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3, "oh", "ow"])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"class_names": '["%s"]' % '", "'.join(classes),
                       "palette": str([list(c) for c in palette])}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def colour_frames(n: int = 8, height: int = 64, width: int = 128) -> list[np.ndarray]:
    """Frames of three colour bands (blue over green over red) drifting right by 2 pixels a frame."""
    frames = []
    for t in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[: height // 3, :, 2] = 200
        frame[height // 3: 2 * height // 3, :, 1] = 200
        frame[2 * height // 3:, :, 0] = 200
        frame[:, (20 + 2 * t) % width: (36 + 2 * t) % width] = 128  # a grey block moving across
        frames.append(frame)
    return frames


def test_an_onnx_file_from_outside_taplab_segments_a_video_end_to_end(tmp_path):
    from taplab.codec import encode
    from taplab.runtime import Segmenter

    model_path = outside_onnx(tmp_path / "colours.onnx")
    video = encode(colour_frames(), tmp_path / "bands.mp4", gop=4, codec="mpeg4", quality=2)
    model = load_model(model_path)
    assert (model.engine, model.num_classes, model.stride) == ("onnxruntime", 3, 4)
    assert model.class_names == ("sky", "grass", "brick") and model.colors[2] == (255, 0, 0)
    results = list(Segmenter(model_path).run(video))
    assert len(results) == 8 and [r.kind for r in results if r.pict_type == "I"] == ["key-I"] * 2
    assert sum(not r.kind.is_key for r in results) >= 4  # warped along the vectors
    for r in results:
        bands = [np.bincount(r.labels[rows].ravel(), minlength=3).argmax()
                 for rows in (slice(4, 17), slice(26, 38), slice(47, 60))]
        assert bands == [0, 1, 2], r.index  # sky over grass over brick, on key and warped frames alike
    out = tmp_path / "masks"
    main(["segment", str(video), "--model", str(model_path), "--out", str(out), "--format", "labels"])
    assert len(list(out.rglob("*.png"))) == 8


def test_onnx_files_errors(tmp_path):
    model_path = outside_onnx(tmp_path / "colours.onnx")
    with pytest.raises(ConfigError, match="runs in onnxruntime, not torch"):
        load_model(model_path, engine="torch")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="not a model ONNX Runtime can load"):
        load_model(broken)


def test_an_onnx_file_of_fixed_size_segments_that_size_and_refuses_others_before_the_first_frame(tmp_path):
    from taplab.codec import encode
    from taplab.runtime import Segmenter

    model_path = outside_onnx(tmp_path / "fixed.onnx", size=(64, 128))
    model = load_model(model_path)
    assert model.geometry(64, 128).size == (16, 32)
    video = encode(colour_frames(4), tmp_path / "bands.mp4", gop=4, codec="mpeg4", quality=2)
    assert len(list(Segmenter(model_path).run(video))) == 4
    other = encode(colour_frames(4, height=96), tmp_path / "taller.mp4", gop=4, codec="mpeg4", quality=2)
    with pytest.raises(ModelError, match="takes 64x128 frames only, not 96x128: export it with dynamic"):
        next(iter(Segmenter(model_path).run(other)))


def test_export_format_onnx_writes_a_file_that_loads_with_the_models_metadata(tmp_path, capsys, scene):
    out = tmp_path / "default.onnx"
    main(["export", "default", str(out)])
    assert "wrote" in capsys.readouterr().out
    exported, original = load_model(out), load_model("default", engine="torch")
    assert exported.engine == "onnxruntime" and exported.module is None
    assert (exported.class_names, exported.colors, exported.stride) == (original.class_names, original.colors, 4)
    assert (exported.predict(scene) == original.predict(scene)).mean() >= AGREEMENT
    with pytest.raises(SystemExit) as exit_:
        main(["export", "default", str(tmp_path / "copy.pt")])
    assert exit_.value.code == 2 and "is not a file" in capsys.readouterr().err
    assert not (tmp_path / "copy.pt").exists()
