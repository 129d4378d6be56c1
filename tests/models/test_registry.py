import pytest
import torch

import models


def test_registry_names_the_first_families():
    assert {"mlp", "lenet"} <= set(models.REGISTRY)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown model 'nope'.*lenet"):
        models.get("nope")


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_model_maps_held_out_samples_to_class_logits(name):
    spec = models.get(name)
    (x,) = spec.sample(5)
    assert spec.create(seed=0)(x).shape == (5, 10)


def test_same_seed_gives_same_weights():
    spec = models.get("lenet")
    a, b = spec.create(seed=3).state_dict(), spec.create(seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = spec.create(seed=4).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_sample_repeats_the_held_out_set_when_asked_for_more():
    spec = models.get("mlp")
    n = len(spec.data().test_x)
    (x,) = spec.sample(n + 2)
    assert torch.equal(x[n], x[0])
