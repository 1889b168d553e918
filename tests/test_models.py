"""Backbones: shapes, sizes, insightface compatibility, attention indexing, compile/bf16, and a
tiny overfit run with ArcFace."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fmr.losses import ArcFace, MarginHead
from fmr.models import (
    INPUT_SIZE,
    count_flops,
    count_parameters,
    create_model,
    list_models,
    normalize_input,
)
from fmr.models import ressanet as ressanet_module
from fmr.models.ressanet import RelPosSelfAttention, relative_index
from fmr.settings import REPO_ROOT

ALL_MODELS = [
    "iresnet18", "iresnet18_half", "iresnet34", "iresnet50", "iresnet100", "iresnet200",
    "ressanet18", "ressanet18_half", "ressanet34", "ressanet50", "ressanet100",
]
SMALL_INPUT = 32  # quick tests; every model also runs once at 112 in test_forward_shape


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def insightface_iresnet_keys(layers: tuple[int, int, int, int], embedding_size: int = 512):
    """State-dict keys and shapes of insightface's iresnet, written from its definition (issue 3):
    stem conv1-bn1-prelu; layerS.N.{bn1, conv1, bn2, prelu, conv2, bn3} and
    downsample.{0: 1x1 conv, 1: BN} in each stage's first block (every stage starts with
    stride 2); head bn2 - fc(512*7*7 -> E) - features (BatchNorm1d)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 3, 3)
    bn("bn1", 64)
    shapes["prelu.weight"] = (64,)
    in_channels = 64
    for stage, (count, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True), 1):
        for index in range(count):
            block = f"layer{stage}.{index}"
            bn(f"{block}.bn1", in_channels)
            shapes[f"{block}.conv1.weight"] = (width, in_channels, 3, 3)
            bn(f"{block}.bn2", width)
            shapes[f"{block}.prelu.weight"] = (width,)
            shapes[f"{block}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{block}.bn3", width)
            if index == 0:
                shapes[f"{block}.downsample.0.weight"] = (width, in_channels, 1, 1)
                bn(f"{block}.downsample.1", width)
            in_channels = width
    bn("bn2", 512)
    shapes["fc.weight"] = (embedding_size, 512 * 7 * 7)
    shapes["fc.bias"] = (embedding_size,)
    bn("features", embedding_size)
    return shapes


@pytest.fixture(scope="module")
def insightface_r50_keys() -> dict[str, tuple[int, ...]]:
    return insightface_iresnet_keys((3, 4, 14, 3))


def test_registry_lists_every_architecture():
    assert list_models() == ALL_MODELS
    with pytest.raises(ValueError, match="iresnet50"):
        create_model("resnet50")


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shape(name):
    torch.manual_seed(0)
    model = create_model(name, embedding_size=256).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE))
    assert out.shape == (1, 256)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() > 0


@pytest.mark.parametrize(
    "name, expected_millions",
    [("iresnet18", 24.0), ("iresnet34", 34.1), ("iresnet50", 43.6), ("iresnet100", 65.2)],
)
def test_iresnet_parameter_counts(name, expected_millions):
    params = count_parameters(meta_model(name))
    assert abs(params / 1e6 - expected_millions) <= 0.01 * expected_millions


def test_ressanet_docstring_table_matches_counts():
    """The parameters and FLOPs written in ressanet.py's docstring are the counted ones."""
    rows = re.findall(
        r"^\| (\d+)\s+\| ([\d.]+)M\s+\| ([\d.]+)\s+\| ([\d.]+)M\s+\| ([\d.]+)\s+\|$",
        ressanet_module.__doc__, flags=re.M,
    )
    assert [row[0] for row in rows] == ["18", "34", "50", "100"]
    for depth, ir_params, ir_flops, sa_params, sa_flops in rows:
        for family, params, flops in (("iresnet", ir_params, ir_flops),
                                      ("ressanet", sa_params, sa_flops)):
            model = meta_model(f"{family}{depth}")
            assert f"{count_parameters(model) / 1e6:.1f}" == params, (family, depth)
            assert f"{count_flops(model) / 1e9:.2f}" == flops, (family, depth)


def test_count_flops_on_known_layers():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 1, stride=2), nn.Flatten(), nn.Linear(4 * 56 * 56, 10),
    )
    before = [p.clone() for p in model.parameters()]
    expected = 8 * 3 * 9 * 112 * 112 + 4 * 8 * 56 * 56 + 4 * 56 * 56 * 10
    assert count_flops(model, 112) == expected
    # counted on meta tensors: the model keeps its device and weights
    assert all(p.device.type == "cpu" and torch.equal(p, b)
               for p, b in zip(model.parameters(), before, strict=True))


def test_iresnet_flops_match_insightface_figures():
    # insightface's model zoo lists r50 at 6.3 and r100 at 12.1 GFLOPs (multiply-adds)
    assert round(count_flops(meta_model("iresnet50")) / 1e9, 1) == 6.3
    assert round(count_flops(meta_model("iresnet100")) / 1e9, 1) == 12.1


def test_iresnet50_state_dict_is_insightface_and_round_trips(tmp_path, insightface_r50_keys):
    torch.manual_seed(0)
    model = create_model("iresnet50").eval()
    state = model.state_dict()
    assert set(state) == set(insightface_r50_keys)
    assert {k: tuple(v.shape) for k, v in state.items()} == insightface_r50_keys
    torch.save(state, tmp_path / "backbone.pth")

    other = meta_model("iresnet50").eval()  # shapes only: every value comes from the file
    other.load_state_dict(torch.load(tmp_path / "backbone.pth", weights_only=True), strict=True,
                          assign=True)
    images = torch.randn(1, 3, 112, 112)
    with torch.inference_mode():
        assert torch.equal(model(images), other(images))


def test_embedding_batchnorm_scale_is_frozen_at_one():
    model = create_model("iresnet18", input_size=SMALL_INPUT)
    assert not model.features.weight.requires_grad
    assert torch.equal(model.features.weight, torch.ones(512))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(4, 3, SMALL_INPUT, SMALL_INPUT)).pow(2).mean().backward()
    optimizer.step()
    assert torch.equal(model.features.weight, torch.ones(512))
    assert model.features.bias.grad is not None


def test_ressanet_blocks():
    model = create_model("ressanet18")
    attention = [m for m in model.modules() if isinstance(m, RelPosSelfAttention)]
    # stage 4 of ressanet18 has 2 blocks: the strided one attends over 14x14, the other 7x7
    assert [(a.height, a.width, a.heads) for a in attention] == [(14, 14, 4), (7, 7, 4)]
    assert not any("conv2" in name for name, _ in model.layer4.named_parameters())
    assert sum(1 for name, _ in model.named_modules() if name.endswith(".se")) == 4
    assert not any(name.endswith(".se") for name, _ in model.layer1.named_modules())
    stem_and_head = ("conv1.weight", "bn1.weight", "prelu.weight", "bn2.weight", "fc.weight",
                     "features.weight")
    assert all(k in model.state_dict() for k in stem_and_head)


def test_relative_index():
    assert relative_index(3).tolist() == [[2, 3, 4], [1, 2, 3], [0, 1, 2]]


def test_relative_position_attention_matches_direct_computation():
    """Logit between (h, w) and (h2, w2) = q.k + q.r_height[h2-h] + q.r_width[w2-w], softmax over
    keys, output = weighted values; checked against a loop over positions."""
    torch.manual_seed(0)
    channels, heads, height, width = 8, 2, 3, 4
    attention = RelPosSelfAttention(channels, height, width, heads).double()
    x = torch.randn(2, channels, height, width, dtype=torch.float64)
    out = attention(x)

    d = channels // heads
    qkv = F.conv2d(x, attention.qkv.weight)
    q, k, v = qkv[:, :channels], qkv[:, channels:2 * channels], qkv[:, 2 * channels:]
    expected = torch.zeros_like(x)
    positions = [(h, w) for h in range(height) for w in range(width)]
    for b in range(2):
        for n in range(heads):
            c = slice(n * d, (n + 1) * d)
            for h, w in positions:
                query = q[b, c, h, w] * d**-0.5
                logits = torch.stack([
                    query @ k[b, c, h2, w2]
                    + query @ attention.rel_height[h2 - h + height - 1]
                    + query @ attention.rel_width[w2 - w + width - 1]
                    for h2, w2 in positions
                ])
                weights = logits.softmax(0)
                expected[b, c, h, w] = sum(
                    weight * v[b, c, h2, w2] for weight, (h2, w2) in zip(weights, positions,
                                                                         strict=True)
                )
    torch.testing.assert_close(out, expected)


def test_normalize_input_layouts_and_range():
    pixels = torch.randint(0, 256, (2, 112, 112, 3), dtype=torch.uint8)
    pixels[0, 0, 0] = torch.tensor([0, 255, 128], dtype=torch.uint8)
    nhwc = normalize_input(pixels)
    nchw = normalize_input(pixels.permute(0, 3, 1, 2))
    assert nhwc.shape == (2, 3, 112, 112) and nhwc.dtype == torch.float32
    assert torch.equal(nhwc, nchw)
    assert nhwc[0, :, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1.0], abs=1e-6)
    assert torch.equal(normalize_input(pixels.float()), nhwc)  # float input is in [0, 255]
    with pytest.raises(ValueError):
        normalize_input(torch.zeros(112, 112, 3))


def test_ressanet_compiles_as_one_graph():
    """torch.compile traces the whole forward as one graph: no data-dependent control flow.
    ResSaNet-18 holds every block kind (IResNet, SE, attention) plus the shared stem and head."""
    torch.manual_seed(0)
    model = create_model("ressanet18", input_size=SMALL_INPUT).eval()
    images = torch.randn(2, 3, SMALL_INPUT, SMALL_INPUT)
    with torch.no_grad():
        compiled = torch.compile(model, fullgraph=True, backend="eager", dynamic=False)
        torch.testing.assert_close(compiled(images), model(images))


@pytest.mark.parametrize("name", ["iresnet18", "ressanet18"])
def test_channels_last_and_bf16(name):
    """channels_last + bf16 autocast give the fp32 embeddings up to bf16 rounding."""
    torch.manual_seed(0)
    model = create_model(name, input_size=SMALL_INPUT)
    images = torch.randn(4, 3, SMALL_INPUT, SMALL_INPUT)
    with torch.no_grad():
        model(images)  # BN statistics from data, so eval mode has realistic activations
        reference = model.eval()(images)
        fast = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fast(images.to(memory_format=torch.channels_last))
    assert low.dtype == torch.bfloat16
    assert F.cosine_similarity(low.float(), reference).min() > 0.99


def separable_images(classes: int = 8, per_class: int = 4, size: int = SMALL_INPUT):
    """Synthetic classes: a smooth random colour pattern per class, seen through random 8-px
    shifts and heavy pixel noise; normalised like face crops."""
    generator = torch.Generator().manual_seed(0)
    patterns = F.interpolate(torch.rand(classes, 3, 6, 6, generator=generator) * 255,
                             size=(size + 8, size + 8), mode="bilinear", align_corners=False)
    crops = []
    for pattern in patterns:
        for _ in range(per_class):
            dx, dy = torch.randint(0, 9, (2,), generator=generator).tolist()
            crops.append(pattern[:, dy:dy + size, dx:dx + size])
    pixels = torch.stack(crops) + 60 * torch.randn(classes * per_class, 3, size, size,
                                                   generator=generator)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return normalize_input(pixels.clamp(0, 255)), labels


@pytest.mark.parametrize("name", ["iresnet18", "ressanet18"])
def test_overfits_eight_classes_with_arcface(name):
    torch.manual_seed(0)
    images, labels = separable_images()
    model = create_model(name, input_size=SMALL_INPUT, embedding_size=128)
    head = MarginHead(128, 8, ArcFace())
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-3)
    history = []
    for _ in range(30):
        out = head(model(images), labels, return_logits=True)
        history.append((out.correct.item(), out.loss.item()))
        if out.correct.item() == len(labels) and out.loss.item() < 1.0:
            break
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert history[0][0] < len(labels)  # not separated before training
    assert history[-1][0] == len(labels), history
    assert history[-1][1] < 1.0, history  # separated with ArcFace's margin, not just barely


def test_training_path_imports_no_dlib_facenet_or_streamlit():
    """The GPU training machine has none of them: models, losses and checkpoints must not
    import them (checked in a fresh interpreter, as other tests may have loaded them here)."""
    code = (
        "import sys, fmr.models, fmr.losses, fmr.modelfile, fmr.export\n"
        "print(sorted(m for m in ('dlib', 'facenet_pytorch', 'streamlit') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[]"
