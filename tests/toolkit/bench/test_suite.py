import json

import jsonschema

from toolkit import bench
from toolkit.bench import suite
from toolkit.bench.runner import SCHEMA_FILE


def test_zoo_run_writes_json_csv_markdown_and_plot_for_every_model(tmp_path, monkeypatch):
    import models

    assert suite.zoo_names() == list(models.REGISTRY)
    monkeypatch.setattr(suite, "zoo_names", lambda: ["mlp"])  # one model keeps the test short
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "serve.json").write_text("{}")  # another benchmark's file: kept
    plan = bench.Plan(backends=("torch", "ort"), batches=(1, 2), budget=bench.Budget(1, 5, 0.0, repeats=1),
                      measure_peak=False)
    run, written = suite.run_zoo(plan, tmp_path / "results", note="Shared machine.")
    assert written == tmp_path / "results"
    assert sorted(p.name for p in written.iterdir()) == ["RESULTS.md", "bench.csv", "bench.json", "latency.png", "ratios.png",
                                                             "serve.json"]
    jsonschema.validate(json.loads((written / "bench.json").read_text()), json.loads(SCHEMA_FILE.read_text()))
    md = (written / "RESULTS.md").read_text()
    assert "Shared machine." in md and "| mlp | torch | 1 |" in md and "| mlp | ort | 2 |" in md
    assert run.env["cpu"] in md
