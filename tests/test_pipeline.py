"""The paper's pipeline: ranking against brute force, small-sample statistics,
and `npskip reproduce --quick` end to end on real MNIST, with resuming."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npskip.engine.model import SkipCNN
from npskip.paper.ranking import label_images, rank, top_images
from npskip.paper.stats import confusion_matrix, majority_baseline, stratified_split, wilson_interval

from test_data import MIRROR

REPO = Path(__file__).resolve().parents[1]


def test_ranking_equals_brute_force(rng):
    model = SkipCNN((6, 5, 1), 3, widths=(10, 11, 12), seed=2)
    x = rng.random((23, 6, 5, 1), dtype=np.float32)
    x[7] = x[3]          # identical images tie on every map: the lower index must win
    x[15] = x[3]
    r = rank(model, x, maps=4, top=3, batch_size=5)      # batches of 5: streaming is exercised
    label, picks = {}, {}
    for layer in range(3):
        # brute force: all activations at once, then sort by (-score, index) in Python
        model.forward(x)
        act = model.activations[layer]
        for j in range(4):
            scores = [float(np.mean(np.abs(act[i, :, :, j]))) for i in range(len(x))]
            best = sorted(range(len(x)), key=lambda i: (-scores[i], i))[:3]
            np.testing.assert_array_equal(r["tops"][layer][j], best)
            np.testing.assert_allclose(r["scores"][layer][:, j], scores, rtol=1e-6)
            for i in best:
                label[i] = max(label.get(i, -1), layer)
                picks[i] = picks.get(i, 0) + 1
    np.testing.assert_array_equal(r["indices"], sorted(label))
    np.testing.assert_array_equal(r["labels"], [label[i] for i in sorted(label)])
    np.testing.assert_array_equal(r["picks"], [picks[i] for i in sorted(label)])


def test_ties_and_repeats_by_hand():
    scores = np.array([[1.0, 0.0], [3.0, 5.0], [3.0, 5.0], [2.0, 0.0]])
    np.testing.assert_array_equal(top_images(scores, 2), [[1, 2], [1, 2]])
    # image 1 picked by layers 0 and 2, image 4 by layer 1: labels 2 and 1
    idx, labels, picks = label_images([np.array([[1, 3]]), np.array([[4, 3]]), np.array([[1, 0]])])
    assert idx.tolist() == [0, 1, 3, 4]
    assert labels.tolist() == [2, 2, 1, 1] and picks.tolist() == [1, 2, 2, 1]


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(7, 10)
    assert abs(lo - 0.3968) < 1e-3 and abs(hi - 0.8922) < 1e-3
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == 1.0


def test_stratified_split_covers_small_labels():
    labels = np.array([0] * 3 + [1] * 20 + [2] * 2)
    tr, val, te = stratified_split(labels, seed=1)
    assert sorted(np.concatenate([tr, val, te]).tolist()) == list(range(25))
    assert set(labels[te]) == {0, 1} and set(labels[val]) == {0, 1}
    assert np.all(labels[np.isin(np.arange(25), tr)] >= 0) and 2 not in labels[te]
    np.testing.assert_array_equal(stratified_split(labels, seed=1)[2], te)


def test_confusion_and_baseline():
    assert confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2], 3).tolist() == [[1, 0, 0], [0, 1, 1],
                                                                       [0, 0, 1]]
    assert majority_baseline([2, 2, 1], [2, 0, 2, 2]) == 0.75


REQUIRED = ["cnn1.test_accuracy", "ranking.label_counts", "cnn2.test_accuracy", "cnn2.test_count",
            "cnn2.majority_baseline", "cnn3_paper.test_accuracy", "cnn3_paper.test_count",
            "cnn3_deploy.test_accuracy", "cnn3_deploy.route_counts", "cnn3_deploy.multiply_add_fraction",
            "cnn3_deploy.wall_fraction"] + [
    f"controls.{c}.test_accuracy" for c in ("cnn1", "all_route_0", "all_route_1",
                                           "random_cnn2_proportions", "oracle")] + [
    # beyond the paper (npskip.exits)
    "exits.heads.exit_test_accuracy", "exits.heads.exit_multiply_add_fraction",
    "exits.curve.operating_point.test_accuracy",
    "exits.curve.operating_point.multiply_add_fraction",
    "exits.curve.operating_point.wall_fraction", "exits.curve.oracle.test_accuracy",
    "exits.curve.operating_point.cnn1_test_accuracy",
    "exits.curve.operating_point.test_paired_difference.mean",
    "exits.curve.selection.evidence.loss_upper",
    "exits.curve.curve.val_wall_fraction"]


def _get(d, dotted):
    for p in dotted.split("."):
        d = d[p]
    return d


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("run")
    cmd = [sys.executable, "-m", "npskip.cli", "reproduce", "--dataset", "mnist", "--quick",
           "--no-progress", "--data-dir", str(data), "--mirror", MIRROR.as_uri(),
           "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    return cmd, out, run


def test_reproduce_quick_writes_every_field(quick_run):
    _, out, run = quick_run
    results = json.loads((out / "results.json").read_text())
    for key in REQUIRED:
        value = _get(results, key)
        if key.endswith("accuracy") or key.endswith("baseline"):
            assert np.all((0 <= np.asarray(value)) & (np.asarray(value) <= 1)), (key, value)
    assert sum(_get(results, "cnn3_deploy.route_counts")) == 600
    assert _get(results, "cnn2.test_count") >= 1
    assert results["paper"]["cnn2_test_accuracy"] == 0.62
    for name in ("report.md", "training_curves.png", "top_images_conv1.png",
                 "top_images_conv3.png", "cnn2_confusion.png", "accuracy_vs_compute.png",
                 "accuracy_compute_curve.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "## What holds" in report and "## Beyond the paper: early exits" in report
    curve = results["exits"]["curve"]
    assert curve["curve"]["exit_counts"][0] == [600, 0, 0]        # t = 0: all leave at exit 1
    assert curve["curve"]["exit_counts"][-1] == [0, 0, 600]       # t = 1: CNN1 itself
    assert curve["curve"]["multiply_add_fraction"][-1] == 1.0     # ... with no head run
    heads = results["exits"]["heads"]
    assert heads["exit_multiply_add_fraction"][0] < heads["exit_multiply_add_fraction"][1] < 1.1
    # the rule's choice: a threshold within the cost limit, or CNN1 itself
    point, sel = curve["operating_point"], curve["selection"]
    assert point["multiply_add_fraction"] <= sel["cost_limit"] or point["choice"] == "cnn1"
    assert point["choice"] in ("exits", "cnn1")
    assert (point["choice"] == "cnn1") == (sel["threshold"] is None)
    assert sel["evidence"]["n"] == results["cnn1"]["val_count"]
    assert "| seed | choice | validation: exits - CNN1" in report


def test_reproduce_resumes_only_the_missing_stage(quick_run):
    cmd, out, _ = quick_run
    before = json.loads((out / "seed0" / "cnn1.json").read_text())
    (out / "seed0" / "controls.json").unlink()
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    ran = [line for line in run.stdout.splitlines() if line.endswith(": running")]
    assert ran == ["[seed 0] controls: running"], ran
    assert json.loads((out / "seed0" / "cnn1.json").read_text()) == before
    assert (out / "seed0" / "controls.json").exists()


def test_rerunning_the_curve_stage_gives_the_same_choice(quick_run):
    # the rule's evidence is computed, not timed: the same files give the same
    # threshold (or the same fallback)
    cmd, out, _ = quick_run
    path = out / "seed0" / "exit_curve.json"
    before = json.loads(path.read_text())
    path.unlink()
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    after = json.loads(path.read_text())
    assert after["selection"]["threshold"] == before["selection"]["threshold"]
    for key in ("exited_minus_cnn1_mean", "loss_upper", "accepted"):
        assert after["selection"]["evidence"][key] == before["selection"]["evidence"][key]


def test_reproduce_runs_on_cifar100_format_fixtures(tmp_path):
    # CIFAR-100 cannot be downloaded here: the same command runs on small files
    # in its official binary layout (3074-byte records, R, G, B planes).
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "cifar100" / "cifar-100-binary"
    folder.mkdir(parents=True)
    for name, n in (("train.bin", 400), ("test.bin", 100)):
        labels = np.stack([rng.integers(0, 20, n), rng.integers(0, 100, n)], axis=1)
        pixels = rng.integers(0, 256, (n, 3072))
        (folder / name).write_bytes(np.concatenate([labels, pixels], axis=1).astype(np.uint8)
                                    .tobytes())
    (folder / "fine_label_names.txt").write_text("\n".join(f"f{i}" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("\n".join(f"c{i}" for i in range(20)))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "npskip.cli", "reproduce", "--dataset", "cifar100", "--epochs",
           "1", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["dataset"] == "cifar100"
    assert results["cnn1"]["test_count"] == 100
    assert sum(results["cnn3_deploy"]["route_counts"]) == 100
    assert (out / "top_images_conv3.png").exists()


def test_summary_leaves_out_figures_some_seeds_lack():
    from npskip.harness.config import Config
    from npskip.report import summarize
    per_seed = {0: {"cnn1": {"test_accuracy": 0.98}, "exits": {"heads": {"test_accuracy": 0.9}},
                    "tag": "a"},
                1: {"cnn1": {"test_accuracy": 0.99}, "tag": "b"}}
    results = summarize(Config(seeds=[0, 1]), per_seed)
    assert results["cnn1"]["test_accuracy"] == pytest.approx(0.985)
    assert "exits" not in results                     # seed 1 has none: not averaged over seed 0
    assert results["tag"] == ["a", "b"]               # words that differ are listed, not picked
    # None (a fallback's threshold) is neither averaged nor turned into NaN
    per_seed[0]["t"], per_seed[1]["t"] = None, 0.5
    per_seed[0]["u"], per_seed[1]["u"] = None, None
    results = summarize(Config(seeds=[0, 1]), per_seed)
    assert results["t"] == [None, 0.5] and results["u"] is None
    assert results["per_seed"]["0"]["exits"]["heads"]["test_accuracy"] == 0.9
