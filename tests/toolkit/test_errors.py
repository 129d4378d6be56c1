from toolkit.errors import first_line


def test_first_line_of_any_exception():
    assert first_line(ValueError("bad shape\n  at node 3")) == "bad shape"
    assert first_line(ValueError("\n  spaced out  \n")) == "spaced out"
    assert first_line(KeyError()) == "KeyError"  # an empty message must not fail inside the handler
    assert first_line(RuntimeError("   ")) == "RuntimeError"
