"""Full-resolution labels computed near class boundaries only equal bilinear upsampling + arg-max."""

import numpy as np
import pytest
import torch

from taplab.data.synth import SynthConfig, generate
from taplab.data.transforms import to_tensor
from taplab.nets.loader import load_model
from taplab.ops.labels import LABEL_MODES, labels_from_logits, logits_to_labels, upsample_labels, upsample_labels_reference

#: the C kernel where it is built (else the reference again) and the numpy reference
IMPLEMENTATIONS = [upsample_labels, upsample_labels_reference]


def exact(logits: torch.Tensor, size) -> np.ndarray:
    return logits_to_labels(logits[None], size)[0].numpy()


@pytest.mark.parametrize("grid, size", [((9, 13), (67, 93)), ((5, 7), (20, 28)), ((16, 32), (64, 128)),
                                        ((10, 10), (37, 41)), ((3, 3), (3, 3)), ((45, 80), (180, 320))])
@pytest.mark.parametrize("upsample", IMPLEMENTATIONS)
def test_equal_to_the_full_computation_when_corners_hold_every_candidate(grid, size, upsample):
    torch.manual_seed(sum(size))
    logits = torch.randn(2, *grid)  # two classes: a mixed quad's corners always hold both
    labels = upsample(logits, size)
    assert labels.dtype == np.uint8 and labels.shape == size
    np.testing.assert_array_equal(labels, exact(logits, size))


@pytest.mark.parametrize("upsample", IMPLEMENTATIONS)
def test_real_model_output_agrees_with_the_full_computation(upsample):
    model = load_model("default")
    frame = next(iter(generate(SynthConfig(height=256, width=512, frames=1, seed=77))))
    logits = model.logits(to_tensor(frame.image))[0]
    agreement = (upsample(logits, (256, 512)) == exact(logits, (256, 512))).mean()
    assert agreement > 0.999


@pytest.mark.parametrize("upsample", IMPLEMENTATIONS)
def test_uniform_logits_and_many_classes(upsample):
    logits = torch.zeros(19, 4, 6)
    logits[7] = 1
    assert (upsample(logits, (16, 24)) == 7).all()
    torch.manual_seed(1)
    many = torch.randn(19, 12, 20)
    # white-noise logits are the worst case (classes that win between cells but at no cell): still mostly equal
    assert (upsample(many, (48, 80)) == exact(many, (48, 80))).mean() > 0.7


def test_label_modes_agree_where_they_must():
    torch.manual_seed(3)
    two = torch.randn(2, 9, 13)  # two classes: "bilinear" is exact (see above)
    labels = {mode: labels_from_logits(two, (36, 52), mode) for mode in LABEL_MODES}
    assert all(a.dtype == np.uint8 and a.shape == (36, 52) for a in labels.values())
    np.testing.assert_array_equal(labels["exact"], logits_to_labels(two[None], (36, 52))[0].numpy())
    np.testing.assert_array_equal(labels["bilinear"], labels["exact"])
    np.testing.assert_array_equal(labels["bilinear"], upsample_labels(two, (36, 52)))
    # nearest: each cell's arg-max repeated over its 4x4 pixels
    coarse = two.argmax(0).numpy().astype(np.uint8)
    np.testing.assert_array_equal(labels["nearest"], coarse.repeat(4, 0).repeat(4, 1))
    assert 0.8 < (labels["nearest"] == labels["exact"]).mean() < 1  # they differ near boundaries only


def test_label_modes_at_the_logits_size_and_on_uniform_logits():
    torch.manual_seed(4)
    many = torch.randn(19, 6, 10)
    for mode in LABEL_MODES:  # no upsampling: every mode is the arg-max
        np.testing.assert_array_equal(labels_from_logits(many, (6, 10), mode), many.argmax(0).numpy())
    uniform = torch.zeros(19, 4, 6)
    uniform[11] = 1
    assert all((labels_from_logits(uniform, (13, 21), mode) == 11).all() for mode in LABEL_MODES)


def test_unknown_label_mode():
    with pytest.raises(ValueError, match="mode must be one of .*'bicubic'"):
        labels_from_logits(torch.zeros(2, 3, 3), (6, 6), "bicubic")


def test_class_map_is_argmax_with_its_ties():
    from taplab.ops.labels import class_map

    logits = torch.randn(19, 30, 40, generator=torch.Generator().manual_seed(0))
    logits[4, :5] = logits[9, :5] = 100.0  # a tie: the first class wins, as with argmax
    assert torch.equal(class_map(logits), logits.argmax(0))
    assert (class_map(logits)[:5] == 4).all()
