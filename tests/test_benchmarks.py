import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_torch_twin_of_the_default_preset_computes_the_same_network():
    torch = pytest.importorskip("torch")
    from fashionnet.config import preset
    from fashionnet.layers import Dropout
    from fashionnet.runs import build_model

    bench = _bench_module()
    twin = bench._torch_twin(build_model(preset("mlp"), 784, 10, np.random.default_rng(0)), 1)
    rates = [m.p for m in twin if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.016, 0.065, 0.065]  # the default's input and hidden dropout, as they are
    # without dropout (whose masks come from two generators) the two compute the same numbers
    model = build_model(preset("mlp", dropout=0.0, input_dropout=0.0), 784, 10,
                        np.random.default_rng(0))  # fmt: skip
    assert not any(isinstance(layer, Dropout) for layer in model.layers)
    twin = bench._torch_twin(model, threads=1)
    x = np.random.default_rng(1).random((64, 784), dtype=np.float32)
    for training in (True, False):
        twin.train(training)
        with torch.no_grad():
            expected = twin(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(model.forward(x, training=training), expected, atol=1e-4)


@pytest.mark.realdata
def test_benchmark_smoke_run_produces_every_section(tmp_path, real_data):
    out = tmp_path / "results.json"
    env_csv = tmp_path / "train.csv"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "FASHIONNET_BENCH_CSV": str(env_csv)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(out.read_text())
    runs = results["mlp_throughput"]["1"]["fashionnet"]
    assert runs[0]["train_samples_per_s"] > 0 and runs[0]["peak_rss_mb"] > 0
    cnn = results["cnn_throughput"]["1"]
    assert cnn["fashionnet"][0]["train_samples_per_s"] > 0 and cnn["fashionnet"][0]["infer_ms"] > 0
    (seconds, accuracy), *_ = results["cnn_accuracy"]["fashionnet"][0]["curve"]
    assert seconds > 0 and 0 <= accuracy <= 1
    assert set(results["time_to_accuracy"]) >= {"fashionnet-mlp", "fashionnet-seed", "notebook"}
    assert results["load"]["csv"][0]["rows"] == results["load"]["csv-cached"][0]["rows"] == 200
    preset_profile = results["profile"]["cnn preset, 2 threads"]
    assert "preset cnn (cnn, 32/64/128), batch 256" in preset_profile
    assert "| optimizer SGD over 390,890 parameters |" in preset_profile

    # the tables render from these results (as BENCHMARKS.md is written after a full run)
    page = _bench_module().render(results)
    for title in ("## MLP 784-256-128-10", "## The default preset's MLP", "## Small CNN",
                  "## Time to test accuracy", "## Loading",
                  "## Where a training step's time goes"):  # fmt: skip
        assert title in page
    assert "| fashionnet-mlp | 1 |" in page


def test_each_section_names_the_run_and_machine_that_measured_it():
    # a section rerun later, maybe on another machine, says so under its own heading
    bench = _bench_module()
    amd = {"cpu": "AMD EPYC", "cpus": 2, "python": "3.11.7", "numpy": "2.4.6", "torch": None,
           "processor": "x86_64", "load_average_at_start": [0.5, 0, 0], "blas_kernel": "SkylakeX",
           "blas_threads": 2, "blas_coretype_env": None}  # fmt: skip
    intel = {**amd, "cpu": "Intel Xeon", "blas_kernel": "Haswell", "blas_coretype_env": "Haswell"}
    results = {
        "command": "python benchmarks/run.py", "date": "2026-12-02 18:00", "machine": amd,
        "load": {"idx": [{"seconds": 0.25, "peak_rss_mb": 380.0}]},
        "profile": {"benchmark MLP": "1.809 ms per step"},
        "updates": [{"sections": ["profile"], "command": "python benchmarks/run.py --only profile",
                     "date": "2026-12-03 09:00", "load": [1.5, 0, 0], "machine": intel}],
    }  # fmt: skip
    page = bench.render(results)

    def section(title: str) -> str:  # its "Measured ..." line
        text = page.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
        return next(line for line in text.splitlines() if line.startswith("Measured"))

    loading = section("Loading the 60,000 training images")
    assert (
        "Measured 2026-12-02 18:00 with `python benchmarks/run.py` on AMD EPYC, 2 CPUs" in loading
    )
    assert "choosing its SkylakeX kernels, 2 threads" in loading and "Intel" not in loading
    profile = section("Where a training step's time goes")
    assert ("Measured 2026-12-03 09:00 with `python benchmarks/run.py --only profile` on Intel "
            "Xeon") in profile  # fmt: skip
    assert "forced to Haswell by OPENBLAS_CORETYPE" in profile and "AMD" not in profile


def test_a_worker_runs_in_its_own_process_and_prints_one_json_line():
    # how every measured run is made (a smoke run keeps its workers in one process)
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--worker", "time_to_accuracy",
         "--impl", "fashionnet-seed", "--threads", "1", "--smoke"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(printed["seconds_to"]) == {"0.76", "0.85", "0.88"} and printed["peak_rss_mb"] > 0


@pytest.mark.realdata
def test_serve_load_benchmark_smoke_run(tmp_path, real_data):
    """benchmarks/serve_load.py at tiny counts, so it never rots: every check it makes holds."""
    import shutil

    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    if shutil.which("ab") is None:
        pytest.skip("ab is not installed (apt-get install apache2-utils)")
    from fashionnet.checkpoint import save_checkpoint
    from fashionnet.config import preset
    from fashionnet.data import CLASS_NAMES
    from fashionnet.runs import build_model

    meta = {"image_shape": [28, 28], "class_names": list(CLASS_NAMES), "input_scale": 1 / 255}
    for name in ("mlp", "cnn-small"):
        (tmp_path / name).mkdir()
        model = build_model(preset(name), 784, 10, np.random.default_rng(0))
        save_checkpoint(tmp_path / name / "model.npz", model, metadata=meta)
    out = tmp_path / "serve.json"
    script = ROOT / "benchmarks" / "serve_load.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "mlp"),
                          str(tmp_path / "cnn-small"), "--requests", "400", "--rounds", "1",
                          "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, f"{run.stderr[-4000:]}\n{run.stdout[-2000:]}"  # what went wrong
    result = json.loads(out.read_text())
    mixed = result["mixed"]
    assert mixed["any_5xx"] == 0 and mixed["malformed_4xx"] == mixed["malformed"] > 0
    assert mixed["good_200_cli_class"] == mixed["good"] > 300
    assert set(result["mlp"]) == {"plain FastAPI endpoint", "plain, one BLAS thread",
                                  "fashionnet serve"}  # fmt: skip
    assert all(v["rps"] > 0 for v in result["cnn"].values())


@pytest.mark.realdata
@pytest.mark.parametrize("scenario", ["new-classes", "shifted"])
def test_finetune_benchmark_smoke_run(tmp_path, real_data, scenario):
    """benchmarks/finetune.py at tiny sizes, so it never rots: the arms run, the section renders."""
    out = tmp_path / "finetune.json"
    script = ROOT / "benchmarks" / "finetune.py"
    run = subprocess.run([sys.executable, str(script), "--scenario", scenario, "--preset", "seed",
                          "--per-class", "5", "--seeds", "0", "--epochs", "1", "--source-limit",
                          "500", "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    (record,) = json.loads(out.read_text()).values()
    (row,) = record["rows"]
    arms = {"scratch", "fine-tuned"} | ({"as it is"} if scenario == "shifted" else set())
    assert set(row) == {"per_class"} | arms
    assert all(0 <= r["test_accuracy"] <= 1 for arm in arms for r in row[arm])
    page = "\n".join(_bench_module().render_finetune(json.loads(out.read_text())))
    assert f"{scenario}, seed: measured" in page and "| 5 |" in page
