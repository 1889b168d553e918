"""Margin losses: values and exact gradients against float64 references, behaviour at the edges
(cos = +-1, theta near pi), fp32 under autocast, unlabelled samples, Partial FC, DDP."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from fmr.losses import ArcFace, CombinedMarginLoss, CosFace, MarginHead


def arcface_reference(cosine: torch.Tensor, m: float) -> torch.Tensor:
    """cos(theta + m) in float64, straight from the definition."""
    return torch.cos(torch.acos(cosine.double()) + m)


def finite_difference(function, x: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    """Central difference of an elementwise float64 function."""
    x = x.double()
    return (function(x + step) - function(x - step)) / (2 * step)


def theta_grid(count: int = 20001) -> torch.Tensor:
    return torch.linspace(0.0, math.pi, count, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# values


def test_arcface_logits_match_definition():
    cosine = torch.tensor([[0.3, -0.2, 0.9], [0.5, 0.1, -0.7]])
    labels = torch.tensor([0, 2])
    logits = ArcFace(s=64.0, m=0.5)(cosine, labels)
    expected = 64.0 * cosine.double()
    expected[0, 0] = 64.0 * math.cos(math.acos(0.3) + 0.5)
    expected[1, 2] = 64.0 * math.cos(math.acos(-0.7) + 0.5)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits.double(), expected, atol=1e-4, rtol=1e-6)


def test_cosface_and_combined_margin_values():
    cosine = torch.tensor([[0.3, -0.2], [0.5, 0.1]])
    labels = torch.tensor([1, 0])
    cos_logits = CosFace(s=30.0, m=0.35)(cosine, labels)
    torch.testing.assert_close(cos_logits, 30.0 * torch.tensor([[0.3, -0.55], [0.15, 0.1]]))

    combined = CombinedMarginLoss(s=10.0, m1=1.0, m2=0.3, m3=0.2)(cosine, labels)
    theta = math.acos(-0.2)
    assert combined[0, 1].item() == pytest.approx(10.0 * (math.cos(theta + 0.3) - 0.2), abs=1e-4)
    assert combined[0, 0].item() == pytest.approx(3.0, abs=1e-5)


def test_sphereface_style_margin_uses_the_monotonic_extension():
    margin = CombinedMarginLoss(s=1.0, m1=1.5, m2=0.0, m3=0.0)
    theta = torch.tensor([0.5, 1.5, 2.5, 3.0], dtype=torch.float64)
    phi = 1.5 * theta
    k = torch.floor(phi / math.pi)
    expected = (-1.0) ** k * torch.cos(phi) - 2 * k  # SphereFace's psi
    torch.testing.assert_close(margin.target_logit(torch.cos(theta)), expected)


@pytest.mark.parametrize(
    "margin",
    [ArcFace(), ArcFace(m=1.2), CosFace(), CombinedMarginLoss(m1=1.0, m2=0.3, m3=0.2),
     CombinedMarginLoss(m1=1.35, m2=0.25, m3=0.0)],
    ids=["arcface", "arcface-m1.2", "cosface", "combined", "sphereface-like"],
)
def test_target_logit_decreases_with_angle_and_is_continuous(margin):
    """Past theta + m = pi the target logit keeps falling (a worse angle never scores better)
    and does not jump."""
    theta = theta_grid()
    values = margin.target_logit(torch.cos(theta))
    steps = values.diff()
    assert (steps <= 0).all()
    # strictly falling except where acos needs cos clamped off +-1 (theta within 1.5e-3 rad)
    inside = (theta[1:] > 2e-3) & (theta[1:] < math.pi - 2e-3)
    assert (steps[inside] < 0).all()
    assert steps.abs().max() < 1e-3  # no jump anywhere on a grid of step pi/20000


def test_arcface_past_pi_is_the_mirror_of_cos():
    m = 0.5
    theta = torch.tensor([math.pi - m + 0.1, math.pi - 0.01], dtype=torch.float64)
    values = ArcFace(m=m).target_logit(torch.cos(theta))
    torch.testing.assert_close(values, -2.0 - torch.cos(theta + m))


# ---------------------------------------------------------------------------------------------
# gradients


def test_arcface_gradient_matches_float64_finite_differences():
    """d logit / d cos of the fp32 forward against a float64 central difference of
    s * cos(acos(c) + m): the exact gradient, no straight-through shortcut."""
    s, m = 64.0, 0.5
    targets = torch.tensor([0.999, 0.95, 0.6, 0.1, -0.3, -0.8])  # cos(pi - m) = -0.878
    cosine = torch.full((6, 3), 0.05)
    cosine[:, 1] = targets
    cosine.requires_grad_(True)
    labels = torch.full((6,), 1)
    logits = ArcFace(s=s, m=m)(cosine, labels)
    logits[:, 1].sum().backward()
    reference = finite_difference(lambda c: s * arcface_reference(c, m), targets)
    torch.testing.assert_close(cosine.grad[:, 1].double(), reference, rtol=2e-4, atol=1e-3)
    assert torch.equal(cosine.grad[:, [0, 2]], torch.zeros(6, 2))  # non-targets: d(s*c)/dc


def test_margin_gradients_pass_gradcheck_in_float64():
    """Analytic gradients of every margin form, both sides of theta + m = pi, against
    torch.autograd.gradcheck's float64 finite differences."""
    cosine = torch.tensor([0.97, 0.5, -0.1, -0.7, -0.95, -0.99], dtype=torch.float64,
                          requires_grad=True)
    for margin in (ArcFace(), CosFace(), CombinedMarginLoss(m1=1.0, m2=0.3, m3=0.2),
                   CombinedMarginLoss(m1=1.35, m2=0.25, m3=0.0)):
        assert torch.autograd.gradcheck(margin.target_logit, (cosine,), eps=1e-7, atol=1e-5)


def test_head_gradient_matches_finite_differences_through_the_loss():
    """The whole head (normalise, cosine, ArcFace, cross-entropy) in float64 terms: the fp32
    gradient of the loss w.r.t. the embeddings against a central difference."""
    torch.manual_seed(0)
    head = MarginHead(16, 5, ArcFace(s=8.0, m=0.5))
    embeddings = torch.randn(4, 16)
    labels = torch.tensor([0, 3, 3, 1])

    def loss64(x: torch.Tensor) -> float:
        cosine = F.normalize(x.double()) @ F.normalize(head.weight.detach().double()).T
        target = cosine.gather(1, labels[:, None])
        logits = cosine.scatter(1, labels[:, None], arcface_reference(target, 0.5))
        return F.cross_entropy(8.0 * logits, labels).item()

    x = embeddings.clone().requires_grad_(True)
    head(x, labels).backward()
    step = 1e-5
    numeric = torch.zeros_like(embeddings, dtype=torch.float64)
    for index in [(0, 0), (1, 5), (2, 15), (3, 7), (0, 9)]:
        plus, minus = embeddings.double().clone(), embeddings.double().clone()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (loss64(plus) - loss64(minus)) / (2 * step)
        assert x.grad[index].item() == pytest.approx(numeric[index].item(), rel=1e-3, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# edges


@pytest.mark.parametrize("margin", [ArcFace(), CosFace(), CombinedMarginLoss(m1=1.35, m2=0.25)],
                         ids=["arcface", "cosface", "sphereface-like"])
def test_no_nan_or_inf_at_cos_plus_minus_one_and_theta_near_pi(margin):
    edge = [1.0, -1.0, 1.0000001, -1.0000001, 1 - 1e-7, -1 + 1e-7, math.cos(math.pi - 1e-4),
            math.cos(math.pi - 0.5), math.cos(math.pi - 0.5 + 1e-6)]
    cosine = torch.zeros(len(edge), 4)
    cosine[:, 2] = torch.tensor(edge)
    cosine.requires_grad_(True)
    labels = torch.full((len(edge),), 2)
    logits = margin(cosine, labels)
    F.cross_entropy(logits, labels).backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(cosine.grad).all()


def test_head_is_finite_when_embedding_equals_its_centre():
    head = MarginHead(8, 3, ArcFace())
    embeddings = (head.weight.detach()[[0, 1]] * 5).clone().requires_grad_(True)  # cos = 1
    labels = torch.tensor([0, 1])
    out = head(embeddings, labels, return_logits=True)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(embeddings.grad).all()
    assert out.target_cosine.tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_logits_and_loss_are_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    head = MarginHead(32, 10, ArcFace())
    embeddings = torch.randn(6, 32)
    labels = torch.arange(6)
    reference = head(embeddings, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = head(embeddings.bfloat16(), labels)
        logits = ArcFace()(torch.rand(6, 10, dtype=torch.bfloat16), labels)
    assert loss.dtype == torch.float32 and logits.dtype == torch.float32
    # only the input rounding to bf16 differs from the fp32 run
    assert loss.item() == pytest.approx(reference.item(), rel=0.05)


# ---------------------------------------------------------------------------------------------
# the head: labels, accuracy, Partial FC


def reference_loss(head: MarginHead, embeddings, labels, classes=None) -> torch.Tensor:
    """Softmax cross-entropy with ArcFace over `classes` (default all), written out."""
    weight = head.weight.detach() if classes is None else head.weight.detach()[classes]
    cosine = F.normalize(embeddings) @ F.normalize(weight).T
    if classes is not None:
        labels = torch.tensor([classes.tolist().index(label) for label in labels.tolist()])
    target = cosine.gather(1, labels[:, None])
    logits = cosine.scatter(1, labels[:, None], arcface_reference(target, 0.5).float())
    return F.cross_entropy(64.0 * logits, labels)


def test_head_loss_accuracy_and_target_cosine():
    torch.manual_seed(0)
    head = MarginHead(16, 7, ArcFace())
    embeddings = torch.randn(5, 16)
    labels = torch.tensor([0, 6, 2, 2, 5])
    out = head(embeddings, labels, return_logits=True)
    loss, target_cosine, correct = out  # unpacks as a 3-tuple
    torch.testing.assert_close(loss, reference_loss(head, embeddings, labels))
    cosine = F.normalize(embeddings) @ F.normalize(head.weight.detach()).T
    torch.testing.assert_close(target_cosine, cosine[torch.arange(5), labels])
    assert correct.item() == (cosine.argmax(1) == labels).sum().item()
    # now make samples 0 and 1 sit on their own centres: they are counted correct
    embeddings[:2] = head.weight.detach()[labels[:2]]
    assert head(embeddings, labels, return_logits=True).correct.item() >= 2


def test_unlabelled_samples_are_ignored():
    torch.manual_seed(0)
    head = MarginHead(16, 7, ArcFace())
    embeddings = torch.randn(5, 16, requires_grad=True)
    labels = torch.tensor([3, -1, 1, -1, 0])
    out = head(embeddings, labels, return_logits=True)
    kept = labels >= 0
    torch.testing.assert_close(
        out.loss, reference_loss(head, embeddings.detach()[kept], labels[kept])
    )
    assert out.target_cosine.shape == (3,)
    out.loss.backward()
    assert torch.equal(embeddings.grad[~kept], torch.zeros(2, 16))
    assert embeddings.grad[kept].abs().sum() > 0

    nobody = head(torch.randn(3, 16), torch.full((3,), -1), return_logits=True)
    assert nobody.loss.item() == 0.0 and nobody.target_cosine.numel() == 0
    assert nobody.correct.item() == 0


def test_sampled_softmax_equals_full_softmax_at_rate_one():
    torch.manual_seed(0)
    head = MarginHead(16, 50, ArcFace(), sample_rate=1.0).train()
    embeddings = torch.randn(8, 16)
    labels = torch.randint(0, 50, (8,))
    full = head(embeddings, labels)
    torch.testing.assert_close(full, reference_loss(head, embeddings, labels))
    # the sampling path, with a rate that rounds up to every class, keeps them all in order
    keep, local = head.sample_classes(labels, num_sampled=50)
    assert torch.equal(keep, torch.arange(50)) and torch.equal(local, labels)
    sampled = MarginHead(16, 50, ArcFace(), sample_rate=0.999).train()
    sampled.weight = head.weight
    assert sampled.num_sampled == 50
    torch.testing.assert_close(sampled(embeddings, labels), full)


def test_partial_fc_keeps_positives_and_a_share_of_negatives():
    torch.manual_seed(0)
    head = MarginHead(16, 200, ArcFace(), sample_rate=0.1).train()
    embeddings = torch.randn(12, 16, requires_grad=True)
    labels = torch.tensor([5, 5, 17, 199, 0, 42, -1, 88, 130, 17, 64, 3])

    torch.manual_seed(1)
    keep, local = head.sample_classes(labels, head.num_sampled)
    assert head.num_sampled == 20 and keep.numel() == 20
    assert torch.equal(keep, keep.sort().values)
    positives = labels[labels >= 0]
    assert set(positives.tolist()) <= set(keep.tolist())
    assert torch.equal(keep[local[labels >= 0]], positives) and local[6] == -1

    torch.manual_seed(1)  # same draw inside forward
    loss = head(embeddings, labels)
    kept = labels >= 0
    torch.testing.assert_close(
        loss, reference_loss(head, embeddings.detach()[kept], labels[kept], classes=keep)
    )
    loss.backward()
    touched = head.weight.grad.abs().sum(dim=1) > 0
    assert set(torch.nonzero(touched).flatten().tolist()) <= set(keep.tolist())

    # more positives than the sample size: all positives kept, no negatives needed
    many = torch.arange(0, 200, 5)
    keep, _ = head.sample_classes(many, head.num_sampled)
    assert torch.equal(keep, many)
    # evaluation mode uses every class
    head.eval()
    torch.testing.assert_close(head(embeddings.detach()[kept], labels[kept]),
                               reference_loss(head, embeddings.detach()[kept], labels[kept]))


# ---------------------------------------------------------------------------------------------
# DistributedDataParallel (2 CPU processes, gloo)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    try:
        for sample_rate in DDP_SAMPLE_RATES:
            torch.manual_seed(0)  # same centres and data on every rank
            head = MarginHead(16, 40, ArcFace(), sample_rate=sample_rate)
            embeddings, labels = torch.randn(8, 16), torch.randint(0, 40, (8,))
            labels[3] = -1
            ddp = torch.nn.parallel.DistributedDataParallel(head)
            local = slice(rank * 4, rank * 4 + 4)  # each rank: its half of the batch
            torch.manual_seed(100 + rank)  # ranks draw different negatives
            out = ddp(embeddings[local], labels[local], return_logits=True)
            out.loss.backward()
            results[sample_rate] = (out.loss.detach(), head.weight.grad.clone())
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks done before either tears gloo down: a rank destroying the group while
        # the other still talks to it aborted once in the full suite ("terminate called
        # without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


DDP_SAMPLE_RATES = (1.0, 0.5)


@pytest.mark.slow
def test_head_under_distributed_data_parallel(tmp_path):
    """Each rank computes its local batch's loss; DDP averages the centre gradients. At rate 1
    that equals the mean of the per-rank losses computed in one process; with Partial FC
    (rate 0.5, different negatives per rank) the ranks still end with the same gradient."""
    world = 2
    mp.start_processes(_ddp_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world,
                       start_method="spawn")
    results = {}
    for rank in range(world):
        for rate, value in torch.load(tmp_path / f"rank{rank}.pt").items():
            results[rate, rank] = value
    assert set(results) == {(rate, rank) for rate in DDP_SAMPLE_RATES for rank in range(world)}
    for rate in DDP_SAMPLE_RATES:
        grads = [results[rate, rank][1] for rank in range(world)]
        torch.testing.assert_close(grads[0], grads[1])  # all-reduced: identical on every rank
        assert torch.isfinite(grads[0]).all() and grads[0].abs().sum() > 0

    torch.manual_seed(0)
    head = MarginHead(16, 40, ArcFace())
    embeddings, labels = torch.randn(8, 16), torch.randint(0, 40, (8,))
    labels[3] = -1
    losses = [head(embeddings[r * 4:r * 4 + 4], labels[r * 4:r * 4 + 4]) for r in range(world)]
    (sum(losses) / world).backward()
    torch.testing.assert_close(results[1.0, 0][1], head.weight.grad)
    for rank in range(world):
        torch.testing.assert_close(results[1.0, rank][0], losses[rank].detach())
