import numpy as np

from toolkit.parity import ERROR_BINS, compare_outputs


def test_within_tolerance_passes_and_reports_errors():
    expected = {"y": np.array([1.0, 2.0, 0.0], np.float32)}
    actual = {"y": np.array([1.00005, 2.0, 0.00001], np.float32)}
    c = compare_outputs(expected, actual, "ort", "tvm", atol=1e-4, rtol=1e-3)
    assert c.passed and c.outputs[0].mismatches == 0
    assert np.isclose(c.max_abs, 5e-5, rtol=1e-2)
    assert "tvm vs ort: match" in c.summary()


def test_over_tolerance_counts_mismatches():
    c = compare_outputs({"y": np.zeros(4)}, {"y": np.array([0, 0.5, 0, -1.0])}, "a", "b", atol=1e-3, rtol=0)
    assert not c.passed and c.outputs[0].mismatches == 2 and c.max_abs == 1.0
    assert "DIFFER" in c.summary()


def test_nan_where_the_reference_has_none_is_a_mismatch():
    c = compare_outputs({"y": np.ones(2)}, {"y": np.array([1.0, np.nan])}, "a", "b")
    assert not c.passed
    same_nan = compare_outputs({"y": np.array([np.nan])}, {"y": np.array([np.nan])}, "a", "b")
    assert same_nan.passed


def test_histogram_counts_errors_by_decade():
    expected = {"y": np.zeros(6)}
    actual = {"y": np.array([0.0, 5e-8, 5e-6, 5e-6, 0.5, 3.0])}
    diff = compare_outputs(expected, actual, "a", "b").outputs[0]
    counts = dict(zip(ERROR_BINS, diff.histogram))
    assert counts == {"0": 1, "<1e-07": 1, "<1e-06": 0, "<1e-05": 2, "<0.0001": 0, "<0.001": 0, "<0.01": 0,
                      "<0.1": 0, ">=0.1": 2}
    assert sum(diff.histogram) == diff.size
