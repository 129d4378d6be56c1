from toolkit.runtime.batch import batch_dims, batch_input, fixed_batch, named_batch_symbols, shared_batch_dim
from toolkit.runtime.spec import TensorSpec


def test_shared_batch_dim_needs_one_named_leading_symbol_on_every_tensor():
    x, y = TensorSpec("x", ("batch", 3), "float32"), TensorSpec("y", ("batch", 2), "float32")
    assert shared_batch_dim([x], [y]) == "batch"
    assert shared_batch_dim([x, TensorSpec("m", ("n", 3), "float32")], [y]) is None  # two different symbols
    assert shared_batch_dim([TensorSpec("x", (4, 3), "float32")], [y]) is None  # fixed batch
    assert shared_batch_dim([TensorSpec("x", ("?", 3), "float32")], [y]) is None  # unknown, not a named axis
    assert shared_batch_dim([x], [TensorSpec("y", (2,), "float32")]) is None  # an output without the axis


def test_the_batch_is_the_symbolic_leading_dimension():
    x, lengths = TensorSpec("x", ("batch", 3), "float32"), TensorSpec("lengths", ("batch",), "int64")
    table = TensorSpec("table", (5, 2), "float32")
    assert batch_input([table, x]) == "x"
    assert batch_dims([table, x, lengths], 4) == {"batch": 4}
    assert batch_dims([TensorSpec("x", ("?", 3), "float32")], 2) == {"?": 2}  # unknown size: still the batch here
    assert named_batch_symbols([TensorSpec("x", ("?", 3), "float32"), x]) == ["batch"]  # nothing binds '?' by name
    assert fixed_batch([x]) is None and fixed_batch([table]) == 5 and fixed_batch([]) is None
    assert batch_input([table]) is None and batch_dims([table], 4) == {}
