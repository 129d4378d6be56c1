"""Output parity: two runs of one model compared output by output, within fp32 tolerances.

compare_outputs gives, per output, the largest absolute and relative error, the elements over
tolerance and a histogram of |error| by decade; a Comparison passes when no element is over.
Export (PyTorch vs ONNX Runtime), compile (ONNX Runtime vs TVM) and `dltk compare` use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# fp32 reference tolerances: |actual - expected| <= atol + rtol * |expected|, elementwise.
ATOL = 1e-4
RTOL = 1e-3
# |error| histogram: exactly 0, then decades up to 0.1, then everything larger.
ERROR_EDGES = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
ERROR_BINS = ("0", *(f"<{e:g}" for e in ERROR_EDGES), f">={ERROR_EDGES[-1]:g}")


@dataclass(frozen=True)
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float  # relative to |expected|, floored at 1e-6 so exact zeros do not divide
    mismatches: int  # elements over tolerance
    size: int
    histogram: tuple[int, ...] = ()  # counts of |error| per ERROR_BINS

    def histogram_lines(self) -> list[str]:
        """The |error| histogram as text bars, empty bins left out."""
        widest = max(self.histogram, default=0) or 1
        return [f"      |err| {label:>7} {count:>8}  {'#' * round(24 * count / widest)}"
                for label, count in zip(ERROR_BINS, self.histogram) if count]

    def to_json(self) -> dict:
        return {"name": self.name, "max_abs_error": self.max_abs, "max_rel_error": self.max_rel,
                "mismatches": self.mismatches, "size": self.size,
                "histogram": dict(zip(ERROR_BINS, self.histogram))}


@dataclass(frozen=True)
class Comparison:
    reference: str
    candidate: str
    atol: float
    rtol: float
    outputs: list[OutputDiff]
    dims: dict[str, int] = field(default_factory=dict)  # the symbolic dims the inputs had, where known

    @property
    def passed(self) -> bool:
        return all(o.mismatches == 0 for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    def summary(self) -> str:
        verdict = "match" if self.passed else "DIFFER"
        return (
            f"{self.candidate} vs {self.reference}: {verdict} "
            f"(max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e}; atol {self.atol:g}, rtol {self.rtol:g})"
        )

    def lines(self) -> list[str]:
        """The summary, then each output's errors and histogram, for a terminal."""
        lines = [self.summary()]
        for o in self.outputs:
            lines.append(f"  {o.name}: max abs {o.max_abs:.3e}, max rel {o.max_rel:.3e}, "
                         f"{o.mismatches}/{o.size} over tolerance")
            lines += o.histogram_lines()
        return lines

    def to_json(self) -> dict:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "passed": self.passed,
            "max_abs_error": self.max_abs,
            "max_rel_error": self.max_rel,
            "atol": self.atol,
            "rtol": self.rtol,
            "outputs": [o.to_json() for o in self.outputs],
        }


def compare_outputs(
    expected: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    reference: str,
    candidate: str,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> Comparison:
    diffs = []
    for name, want in expected.items():
        got = actual[name]
        if got.shape != want.shape:
            raise ValueError(f"output '{name}': {candidate} gave shape {got.shape}, {reference} {want.shape}")
        want64, got64 = want.astype(np.float64), got.astype(np.float64)
        both_nan = np.isnan(got64) & np.isnan(want64)  # agreeing on NaN is agreeing
        magnitude = np.abs(np.where(np.isnan(want64), 0.0, want64))
        error = np.where(both_nan, 0.0, np.nan_to_num(np.abs(got64 - want64), nan=np.inf))
        relative = error / np.maximum(magnitude, 1e-6)
        over = error > atol + rtol * magnitude
        diffs.append(
            OutputDiff(
                name,
                float(error.max(initial=0.0)),
                float(relative.max(initial=0.0)),
                int(over.sum()),
                int(want.size),
                error_histogram(error),
            )
        )
    return Comparison(reference, candidate, atol, rtol, diffs)


def error_histogram(error: np.ndarray) -> tuple[int, ...]:
    flat = error.reshape(-1)
    zeros = int((flat == 0).sum())
    bins = np.searchsorted(np.asarray(ERROR_EDGES), flat[flat != 0], side="right")
    return (zeros, *np.bincount(bins, minlength=len(ERROR_EDGES) + 1).tolist())
