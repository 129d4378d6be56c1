"""What each family's file claims: shapes, the course facts it shows, and the tricks the pipeline relies on."""

import pytest
import torch
import torch.nn.functional as F

import models
from models import diffusion, gan, gcn, gpt, perceptron, transformer
from models.train import train


def test_every_family_maps_its_sample_to_outputs_with_the_batch_first():
    for name, spec in models.REGISTRY.items():
        spec = spec.test_size()
        model = spec.create(0)
        with torch.no_grad():
            out = model(*spec.sample(3))
        out = out if isinstance(out, tuple) else (out,)
        assert len(out) == len(spec.output_names) and all(o.shape[0] == 3 for o in out), name


def test_resnet18_is_the_standard_one():
    spec = models.get("resnet18")
    assert spec.parameters() == 11_689_512  # torchvision's resnet18 has exactly this many
    with torch.no_grad():
        assert spec.create(0)(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_perceptron_separates_the_points_but_not_xor_which_the_mlp_learns():
    spec = models.get("perceptron")
    separable = train(spec.create(0), spec.data(), spec.task, spec.recipe, seed=0)
    assert separable.value == 1.0
    xor = train(spec.create(0), perceptron.xor(), spec.task, spec.recipe.with_overrides(epochs=50), seed=0)
    assert xor.value <= 0.75  # no line splits XOR

    mlp = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    recipe = models.get("mlp").recipe.with_overrides(epochs=150, lr=5e-2, warmup_epochs=0)
    assert train(mlp, perceptron.xor(), models.get("mlp").task, recipe, seed=0).value == 1.0


def test_gpt_is_causal_so_right_padding_cannot_change_earlier_logits():
    spec = models.get("gpt").test_size()
    model = spec.create(0)
    (tokens,) = spec.sample(2)
    changed = tokens.clone()
    changed[:, 5:] = 0
    with torch.no_grad():
        assert torch.allclose(model(tokens)[:, :5], model(changed)[:, :5], atol=1e-6)
        assert not torch.allclose(model(tokens)[:, 5:], model(changed)[:, 5:])


def test_gpt_starts_from_gpt2s_init():
    config = gpt.GPTConfig(n_layer=8, n_embd=256)
    model = gpt.GPT(config)
    base, residual = 0.02, 0.02 / (2 * config.n_layer) ** 0.5
    assert model.token.weight.std().item() == pytest.approx(base, rel=0.05)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(base, rel=0.05)
    for block in model.blocks:
        for projection in (block.attn.proj, block.mlp[2]):  # both residual projections, scaled
            assert projection.weight.std().item() == pytest.approx(residual, rel=0.1)
            assert not projection.bias.any()
    assert model.head.weight is model.token.weight


def test_gpt_corpus_round_trips_and_holds_out_its_tail():
    text = gpt.corpus()
    assert 10_000 < len(text.encode()) < 100_000
    assert "".join(gpt.vocabulary()[i] for i in gpt.encode(text[:100])) == text[:100]
    split = gpt.windows(16)
    assert torch.equal(split.train_x[0, 1:], split.train_y[0, :-1])  # y is x shifted by one character


def test_transformer_labels_are_the_unique_most_frequent_token():
    split = transformer.most_frequent_token(10, 16)
    counts = F.one_hot(split.test_x, 10).sum(dim=1)
    assert torch.equal(counts.argmax(dim=1), split.test_y)
    top2 = counts.topk(2, dim=1).values
    assert (top2[:, 0] > top2[:, 1]).all()


def test_gcn_treats_two_copies_of_the_club_as_two_graphs():
    model = models.get("gcn").create(0)
    with torch.no_grad():
        one = model(*gcn.graph_inputs(gcn.N_MEMBERS))
        two = model(*gcn.graph_inputs(2 * gcn.N_MEMBERS))
    assert torch.allclose(two[: gcn.N_MEMBERS], one, atol=1e-6) and torch.allclose(two[gcn.N_MEMBERS :], one, atol=1e-6)
    adjacency = gcn.graph_inputs(10)[1]
    assert torch.allclose(adjacency, adjacency.T)


def test_gan_generator_loss_does_not_move_the_discriminator():
    model = gan.GAN(gan.GANConfig(latent=4, width=4)).train()
    x = models.get("gan").data().train_x[:16]
    torch.manual_seed(0)
    gan.Adversarial().loss(model, x, None).backward()
    with_generator = [p.grad.clone() for p in model.discriminator.parameters()]
    model.zero_grad()
    torch.manual_seed(0)  # the same noise, the discriminator's loss alone
    fake = model.generator(torch.randn(len(x), model.latent))
    real_logit, fake_logit = model.discriminator(x), model.discriminator(fake.detach())
    (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
     + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))).backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(with_generator, model.discriminator.parameters()))
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.generator.parameters())


def test_gan_metric_is_zero_for_identical_sets_and_positive_otherwise():
    x = torch.rand(50, 64)
    assert gan.mmd2(x, x) == pytest.approx(0.0, abs=1e-6)
    assert gan.mmd2(x, torch.rand(50, 64) * 0.2) > 0.05


def test_diffusion_schedule_ends_in_noise_and_noising_is_seeded():
    config = diffusion.DiffusionConfig()
    bars = diffusion.alpha_bars(config)
    assert bars[0] > 0.99 and bars[-1] < 0.01 and (bars[1:] < bars[:-1]).all()
    task = diffusion.NoisePrediction(config)
    x0 = models.get("diffusion").data().test_x[:4]
    a = task.noised(x0, torch.Generator().manual_seed(3))
    b = task.noised(x0, torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
