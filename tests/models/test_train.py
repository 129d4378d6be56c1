import pytest
import torch

import models
from models import checkpoint
from models.data import digits
from models.train import OPTIMIZERS, lr_factor, make_optimizer, train


def test_digits_split_is_fixed_and_held_out():
    split = digits(as_images=True)
    assert split.train_x.shape[1:] == (1, 8, 8) and split.test_x.shape[1:] == (1, 8, 8)
    assert len(split.test_x) == 360 and len(split.train_x) == 1437
    assert 0.0 <= split.train_x.min() and split.train_x.max() <= 1.0
    assert set(split.test_y.tolist()) == set(range(10))


LEARNING_RATES = {"sgd": 0.3, "momentum": 0.05, "adagrad": 0.05, "adam": 3e-3}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_learns_the_digits(optimizer):
    spec = models.get("mlp")
    recipe = spec.recipe.with_overrides(epochs=3, optimizer=optimizer, lr=LEARNING_RATES[optimizer])
    epochs = []
    result = train(spec.create(0), spec.data(), spec.task, recipe, seed=0, on_epoch=epochs.append)
    assert result.metric == "accuracy"
    assert result.value > 0.5, f"{optimizer} reached only {result.value:.3f}"  # chance is 0.1
    assert [(e.number, e.of) for e in epochs] == [(1, 3), (2, 3), (3, 3)]
    assert epochs[-1].value == result.value and str(epochs[-1]).startswith("epoch 3/3  loss ")


def test_training_is_reproducible_with_a_seed():
    spec = models.get("lenet")
    recipe = spec.recipe.with_overrides(epochs=1)
    a, b = spec.create(0), spec.create(0)
    train(a, spec.data(), spec.task, recipe, seed=7)
    train(b, spec.data(), spec.task, recipe, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_schedule_warms_up_then_decays_to_zero():
    factors = [lr_factor(s, warmup_steps=4, total_steps=20) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0) and factors[-1] < 0.01
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop", [torch.nn.Parameter(torch.zeros(1))], models.get("mlp").recipe)


def test_checkpoint_round_trip_loads_without_unpickling_code(tmp_path):
    spec = models.get("lenet")
    model = spec.create(1)
    path = tmp_path / "m.pt"
    checkpoint.save(path, "lenet", model, {"metric": {"accuracy": 0.5}})
    data = torch.load(path, weights_only=True)  # the safe loader must accept it
    assert data["model"] == "lenet" and data["info"]["metric"] == {"accuracy": 0.5}
    restored = spec.create(2)
    restored.load_state_dict(checkpoint.read(path)["state_dict"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a dltk checkpoint"):
        checkpoint.read(path)
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        checkpoint.read(path)


def _flip_a_weight_byte(path, tensor: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    at = bytes(data).index(tensor.numpy().tobytes())  # torch stores tensors uncompressed
    data[at + 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_damaged_weight_bytes_is_refused(tmp_path):
    model = models.get("mlp").create(0)
    path = tmp_path / "m.pt"
    checkpoint.save(path, "mlp", model, {})
    _flip_a_weight_byte(path, next(iter(model.state_dict().values())))
    with pytest.raises(ValueError, match="damaged: .* fails its CRC check"):
        checkpoint.read(path)


def test_an_empty_checkpoint_is_refused(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        checkpoint.read(path)
    torch.save({"format": checkpoint.FORMAT, "model": "mlp", "info": {}, "state_dict": {}}, path)
    with pytest.raises(ValueError, match="without weights"):
        checkpoint.read(path)


def test_checkpoint_temporaries_have_unpredictable_names(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (tmp_path / ".m.pt.tmp").symlink_to(outside)  # planted where the old fixed name pointed
    checkpoint.save(tmp_path / "m.pt", "mlp", models.get("mlp").create(0), {})
    assert outside.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.pt.tmp", "m.pt", "outside.txt"]
