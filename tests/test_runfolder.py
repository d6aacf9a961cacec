"""Run folders that cannot lie: arguments checked before any work, the settings a
folder was made with recorded and enforced, stale stages redone with everything
built from them, broken files named, one run per folder, seeds side by side.

The runs here are tiny (300 training images, one epoch, the paper's stages only):
what is tested is the bookkeeping, not the numbers.
"""

import errno
import json
import math
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from npskip.harness import checkpoint

from npskip import cli
from npskip.engine.model import SkipCNN
from npskip.engine.checks import ConfigError
from npskip.harness.config import Config
from npskip.harness.runfolder import write_json
from npskip.paper.pipeline import SeedRun, load_data
from npskip.harness.runfolder import FolderLock, RunFolderError, read_npz
from npskip.harness.checkpoint import fit_resumable
from npskip.report import report_seeds, seed_folders

from test_data import MIRROR

REPO = Path(__file__).resolve().parents[1]
TINY = ["--limit", "300", "--epochs", "1", "--no-exits", "--no-progress"]
EXITS = ["--limit", "300", "--epochs", "1", "--exit-epochs", "1", "--no-progress"]
PAPER_STAGES = ["cnn1", "ranking", "cnn2", "cnn3_paper", "routes", "cnn3_deploy", "controls",
                "efficiency"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def npskip(*argv, data_dir, capsys):
    """Run the npskip command in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = cli.main([*map(str, argv), "--data-dir", str(data_dir), "--mirror", MIRROR.as_uri()])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def ran(stdout):
    """The stages a run did (not loaded): 'cnn1', 'ranking (redone)', ..."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("[seed") and line.endswith(": running"):
            out.append(line.split("] ")[1][:-len(": running")])
        elif line.startswith("[seed") and ": redoing (" in line:
            out.append(line.split("] ")[1].split(":")[0] + " (redone)")
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    """One finished tiny run (seed 0); tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    cmd = [sys.executable, "-m", "npskip.cli", "reproduce", *TINY, "--out", str(out),
           "--data-dir", str(data_dir), "--mirror", MIRROR.as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    assert ran(run.stdout) == PAPER_STAGES
    return out


@pytest.fixture
def run_copy(tiny, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny, out)
    return out


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# --------------------------------------------------------------------------
# every argument checked before any work starts
# --------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", -1), ("limit", 0), ("limit", -5), ("maps", 0),
    ("top", 0), ("val_fraction", 0.0), ("val_fraction", 1.0), ("val_fraction", math.nan),
    ("batch_size", 0), ("seeds", [-1]), ("seeds", [0, 0]), ("operating_confidence", 0.0),
    ("operating_confidence", 1.5), ("operating_confidence", math.nan), ("widths", (16,)),
    ("widths", (-5, 16)), ("widths", (16, 0, 32)), ("dataset", "mnits"), ("epochs", 2.5),
    ("exits", "yes"), ("timing_repeats", 0), ("exit_epochs", 0), ("exit_hidden", -1)])
def test_config_refuses_a_setting_out_of_range(field, value):
    with pytest.raises(ConfigError) as e:
        Config(**{field: value})
    assert e.value.name == field and str(e.value).startswith(f"{field}: expected ")
    assert f"received {value!r}" in str(e.value) or f"received {value[0]!r}" in str(e.value)


def test_config_widths_must_hold_the_ranked_maps():
    with pytest.raises(ConfigError, match=r"widths: expected at least 10 maps in every layer, "
                                          r"as the ranking reads the first 10 of each"):
        Config(widths=(8, 8, 8))
    assert Config(widths=(8, 8, 8), maps=8).widths == (8, 8, 8)


def test_config_top_must_fit_the_limit():
    with pytest.raises(ConfigError, match=r"top: expected an integer in 3\.\.5 \(distinct "
                                          r"training images per map.*received 10"):
        Config(limit=5, top=10, exits=False)
    assert Config(limit=5, top=5, exits=False).top == 5


@pytest.mark.parametrize("settings, named", [
    ({"limit": 4}, r"limit: expected an integer >= 10 with the early exits: .* at least 2 of "
                   r"each .*exits=False or --no-exits"),
    ({"limit": 2, "exits": False}, r"limit: expected an integer >= 3"),
    ({"top": 2}, r"top: expected an integer >= 3 "),
    ({"exit_pool": 5}, r"exit_pool: expected an integer that divides the 28x28 maps of mnist: "
                       r"1, 2, 4, 7, 14, 28, received 5"),
    ({"exit_pool": 1000}, r"exit_pool: .* received 1000"),
    ({"dataset": "cifar100", "exit_pool": 3}, r"divides the 32x32 maps of cifar100: 1, 2, 4, 8"),
])
def test_config_refuses_what_the_stages_and_their_statistics_cannot_use(settings, named):
    # each of these used to run every paper stage and then end in a traceback
    with pytest.raises(ConfigError, match=named):
        Config(**settings)


def test_a_setting_that_does_not_fit_the_data_is_refused_before_any_stage(tmp_path):
    x, y, *_ = _made_up_data()                          # 6x6 images
    data = (x, y, x[:1], y[:1], x[:5], y[:5], (6, 6, 1), 10)
    with pytest.raises(ConfigError, match=r"val_fraction: expected a fraction that leaves at "
                                          r"least 2 validation image\(s\) \(it leaves 1\)"):
        SeedRun(tmp_path / "a", Config(limit=20), 0, data, log=lambda m: None)
    with pytest.raises(ConfigError, match=r"exit_pool: expected an integer that divides the "
                                          r"6x6 maps of these images: 1, 2, 3, 6, received 4"):
        SeedRun(tmp_path / "b", Config(limit=20, exit_pool=4), 0, _made_up_data(),
                log=lambda m: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("argv, named", [
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, received 0"),
    (["--epochs", "-3"], "argument --epochs: expected an integer >= 1, received -3"),
    (["--limit", "0"], "argument --limit: expected an integer >= 10 with the early exits"),
    (["--limit", "-5"], "argument --limit: expected an integer >= 10"),
    (["--limit", "4", "--top-images", "1"], "argument --limit: expected an integer >= 10"),
    (["--limit", "4", "--top-images", "1", "--no-exits"],
     "argument --top-images: expected an integer in 3..4"),
    (["--limit", "2", "--no-exits"], "argument --limit: expected an integer >= 3"),
    (["--exit-pool", "5"], "argument --exit-pool: expected an integer that divides the 28x28 "
                           "maps of mnist: 1, 2, 4, 7, 14, 28, received 5"),
    (["--exit-pool", "1000"], "argument --exit-pool: expected an integer that divides"),
    (["--dataset", "cifar100", "--exit-pool", "7"], "maps of cifar100: 1, 2, 4, 8, 16, 32"),
    (["--maps", "0"], "argument --maps: expected an integer >= 1, received 0"),
    (["--maps", "17"], "argument --widths: expected at least 17 maps in every layer"),
    (["--top-images", "0"], "argument --top-images: expected an integer >= 3 (distinct"),
    (["--val-fraction", "1.5"], "argument --val-fraction: expected a number in (0, 1)"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, received 0"),
    (["--seeds", "-1"], "argument --seeds: expected an integer >= 0, received -1"),
    (["--exit-epochs", "0"], "argument --exit-epochs: expected an integer >= 1, received 0"),
    (["--exit-hidden", "-1"], "argument --exit-hidden: expected an integer >= 0, received -1"),
    (["--widths", "16"], "argument --widths: expected at least two positive integers"),
    (["--widths", "-5,16"], "received -5,16"),
    (["--widths", "16,x"], "argument --widths: expected comma-separated integers"),
    (["--limit", "9", "--no-exits"], "argument --top-images: expected an integer in 3..9 "),
    (["--no-exits", "--exit-hidden", "0"], "argument --exit-hidden: not allowed with "
                                           "--no-exits (the exit heads it sets do not run)"),
    (["--no-exits", "--exit-pool", "4"], "argument --exit-pool: not allowed with --no-exits"),
])
def test_cli_refuses_a_bad_argument_before_any_work(argv, named, tmp_path, capsys):
    rc, _, err = npskip("reproduce", *argv, "--out", tmp_path / "run",
                        data_dir=tmp_path / "data", capsys=capsys)
    assert rc == 2 and named in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_a_refused_default_is_said_to_be_the_default(tmp_path, capsys):
    for argv, said in ((["--limit", "9"], "received 10 (the default)\n"),
                       (["--limit", "9", "--top-images", "12"], "received 12\n")):
        rc, _, err = npskip("reproduce", *argv, "--no-exits", "--out", tmp_path / "run",
                            data_dir=tmp_path / "data", capsys=capsys)
        assert rc == 2 and "argument --top-images: expected an integer in 3..9" in err, err
        assert err.endswith(said), err


def test_train_refuses_zero_epochs_and_a_negative_seed(tmp_path, capsys):
    for argv, named in ((["--epochs", "0"], "argument --epochs"), (["--seed", "-1"],
                                                                    "argument --seed:")):
        rc, _, err = npskip("train", *argv, "--out", tmp_path / "t", data_dir=tmp_path / "d",
                            capsys=capsys)
        assert rc == 2 and named in err, err
    assert not (tmp_path / "t").exists()


def test_train_names_only_its_own_options(tmp_path, capsys):
    rc, _, err = npskip("train", "--limit", "1", "--out", tmp_path / "t",
                        data_dir=tmp_path / "d", capsys=capsys)
    assert rc == 2 and "argument --limit: expected an integer >= 3" in err, err
    assert "--top-images" not in err and not (tmp_path / "t").exists()


def test_too_few_labelled_images_for_cnn2_is_refused_before_any_work(tmp_path, capsys):
    # three top images per map guarantee images for each of CNN2's three splits
    rc, _, err = npskip("reproduce", "--limit", "5", "--maps", "1", "--top-images", "1",
                        "--epochs", "1", "--no-exits", "--no-progress", "--out",
                        tmp_path / "run", data_dir=tmp_path / "data", capsys=capsys)
    assert rc == 2 and "argument --top-images: expected an integer in 3..5" in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_a_setting_that_needs_the_data_is_refused_before_any_stage(tmp_path, data_dir,
                                                                   capsys):
    # 0.00002 of 60,000 images is one validation image: the exits' statistics need two
    rc, out, err = npskip("reproduce", "--val-fraction", "0.00002", "--epochs", "1",
                          "--no-progress", "--out", tmp_path / "run", data_dir=data_dir,
                          capsys=capsys)
    assert rc == 2 and "argument --val-fraction: expected a fraction that leaves at least 2 " \
                       "validation image(s) (it leaves 1)" in err, err
    assert ran(out) == [] and not list((tmp_path / "run").rglob("*.json"))


def test_fit_refuses_zero_epochs_and_writes_nothing(rng, tmp_path):
    x, y = rng.random((8, 6, 6, 1), dtype=np.float32), rng.integers(0, 2, 8)
    with pytest.raises(ValueError, match="epochs: expected an integer >= 1, received 0"):
        fit_resumable(SkipCNN((6, 6, 1), 2, (10, 10)), tmp_path / "m.npz", x, y, epochs=0,
                      progress=False, log=lambda m: None)
    assert not (tmp_path / "m.npz").exists()


def test_nan_never_reaches_a_json_file(tmp_path):
    with pytest.raises(ValueError, match="r.json: refusing to write a NaN"):
        write_json(tmp_path / "r.json", {"accuracy": float("nan")})
    assert not (tmp_path / "r.json").exists()


# --------------------------------------------------------------------------
# the folder records its settings; another setting is refused
# --------------------------------------------------------------------------

@pytest.mark.parametrize("argv, named", [
    (["--dataset", "fashion-mnist"], "dataset: 'mnist' in the folder, 'fashion-mnist' now"),
    (["--widths", "64,64,64"], "widths: [16, 16, 32] in the folder, [64, 64, 64] now"),
    (["--epochs", "3"], "epochs: 1 in the folder, 3 now"),
])
def test_rerun_with_other_settings_is_refused_naming_them(argv, named, run_copy, data_dir,
                                                          capsys):
    before = snapshot(run_copy)
    args = [a for a in TINY if a not in ("--epochs", "1")] + (
        [] if "--epochs" in argv else ["--epochs", "1"])
    rc, out, err = npskip("reproduce", *args, *argv, "--out", run_copy, data_dir=data_dir,
                          capsys=capsys)
    assert rc == 1 and named in err and "--out" in err and "--fresh" in err, err
    assert "seed0" in err and ran(out) == []
    assert snapshot(run_copy) == before                 # nothing touched


def test_fresh_starts_afresh_only_the_seeds_given(run_copy, data_dir, capsys):
    shutil.copytree(run_copy / "seed0", run_copy / "seed3")     # another finished seed
    seed3 = snapshot(run_copy / "seed3")
    args = [a for a in TINY if a not in ("--epochs", "1")]
    rc, out, err = npskip("reproduce", *args, "--epochs", "2", "--fresh", "--out", run_copy,
                          data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    assert ran(out) == PAPER_STAGES
    assert f"--fresh: deleted from {run_copy / 'seed0'}: cnn1.json, cnn1.npz, cnn2.json" in out
    assert f"--fresh: deleted from {run_copy}: accuracy_vs_compute.png, cnn2_confusion.png, " \
           f"report.md, results.json, top_images_conv1.png" in out
    # seed 3, made with 1 epoch, is not deleted, and not averaged in: named and left out
    assert snapshot(run_copy / "seed3") == seed3
    assert "seed 3 left alone and out of the report: made with other settings: epochs: 1 " \
           "in the folder, 2 now" in out
    results = json.loads((run_copy / "results.json").read_text())
    assert results["config"]["epochs"] == 2 and results["seeds"] == [0]
    assert "epochs: 1 in the folder, 2 now" in results["left_out"]["3"]
    assert "**Left out: seed 3**, made with other settings: epochs: 1 in the folder, 2 now" \
        in (run_copy / "report.md").read_text()
    assert len(json.loads((run_copy / "seed0" / "cnn1.json").read_text())["history"]["loss"]) == 2
    assert json.loads((run_copy / "seed0" / "settings.json").read_text())["settings"]["epochs"] == 2


def test_train_folder_refuses_other_epochs(tmp_path, data_dir, capsys):
    out = tmp_path / "cnn1"
    base = ["train", "--limit", "300", "--no-progress", "--out", out]
    rc, _, err = npskip(*base, "--epochs", "1", data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    rc, out_text, err = npskip(*base, "--epochs", "3", data_dir=data_dir, capsys=capsys)
    assert rc == 1 and "epochs: 1 in the folder, 3 now" in err and "--fresh" in err, err
    assert "test accuracy" not in out_text
    rc, out_text, err = npskip(*base, "--epochs", "3", "--fresh", data_dir=data_dir,
                               capsys=capsys)
    assert rc == 0 and "over 3 epochs" in out_text, err
    assert (out / "cnn1.npz").exists()


def test_a_notebook_changing_one_setting_is_refused(tiny, data_dir):
    # the notebooks build SeedRun from a Config: the same check protects them
    config = Config(widths=(12, 12, 12), epochs=1, limit=300, exits=False)
    data = load_data(config, 0, data_dir)
    with pytest.raises(RunFolderError, match=r"widths: \[16, 16, 32\] in the folder, "
                                             r"\[12, 12, 12\] now[\s\S]*fresh=True"):
        SeedRun(tiny / "seed0", config, 0, data, log=lambda m: None)


def test_files_without_a_record_and_no_settings_record_are_refused(run_copy, data_dir, capsys):
    seed = run_copy / "seed0"
    (seed / "settings.json").unlink()                     # as an older npskip left it:
    cnn2 = json.loads((seed / "cnn2.json").read_text())   # stage records without data or seed
    cnn2["made_from"] = {"inputs": {}, "settings": {}, "outputs": {}}
    (seed / "cnn2.json").write_text(json.dumps(cnn2))
    before = snapshot(run_copy)
    rc, _, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir, capsys=capsys)
    assert rc == 1 and "has no settings.json, and not every npskip file in it was made by " \
                       "this run" in err and "--fresh" in err, err
    assert "cnn2.json: its record does not say which data, seed and settings made it" in err
    assert "cnn1.json" not in err                       # its record proves it
    assert snapshot(run_copy) == before


def test_other_data_in_the_same_folder_is_refused(tiny, data_dir):
    config = Config(epochs=1, limit=300, exits=False)
    data = list(load_data(config, 0, data_dir))
    data[0] = data[0][::-1].copy()                        # same settings, other images
    with pytest.raises(RunFolderError, match="data: arrays_sha256"):
        SeedRun(tiny / "seed0", config, 0, tuple(data), log=lambda m: None)


def test_fresh_deletes_only_the_files_npskip_wrote_and_says_which(tmp_path, data_dir, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "package.json").write_text("{}")
    (proj / "my_experiment.npz").write_bytes(b"mine")
    base = ["train", "--limit", "300", "--epochs", "1", "--no-progress", "--out", proj]
    rc, out, err = npskip(*base, data_dir=data_dir, capsys=capsys)
    assert rc == 0, err                       # other files are no business of npskip's
    assert "stage files" not in out + err and "copied in" not in out + err
    rc, out, err = npskip(*base, "--fresh", data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    assert f"starting {proj} afresh: deleted cnn1.json, cnn1.npz, settings.json" in out
    assert (proj / "package.json").read_text() == "{}"
    assert (proj / "my_experiment.npz").read_bytes() == b"mine"


def test_fresh_for_one_seed_leaves_other_seeds_and_foreign_files_alone(run_copy, data_dir,
                                                                        capsys):
    (run_copy / "my_plot.png").write_bytes(b"mine")
    (run_copy / "seed0" / "my_notes.json").write_text("{}")
    seed0 = snapshot(run_copy / "seed0")
    rc, out, err = npskip("reproduce", *TINY, "--seeds", "1", "--fresh", "--out", run_copy,
                          data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    assert snapshot(run_copy / "seed0") == seed0          # finished, and not given
    assert (run_copy / "my_plot.png").read_bytes() == b"mine"
    assert "my_plot.png" not in out and str(run_copy / "seed0") not in out
    results = json.loads((run_copy / "results.json").read_text())
    assert results["seeds"] == [0, 1] and results["left_out"] == {}      # same settings


# --------------------------------------------------------------------------
# every stage file and checkpoint records what made it: another run's is redone
# --------------------------------------------------------------------------

def test_a_cnn1_trained_on_other_data_is_trained_afresh_not_resumed(run_copy, tmp_path,
                                                                   data_dir, capsys):
    # the first case: a Fashion-MNIST CNN1 copied over a finished MNIST run's
    other = tmp_path / "fashion"
    rc, _, err = npskip("train", "--dataset", "fashion-mnist", "--limit", "300", "--epochs",
                        "1", "--no-progress", "--out", other, data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    reference = json.loads((run_copy / "results.json").read_text())["cnn1"]
    shutil.copy(other / "cnn1.npz", run_copy / "seed0" / "cnn1.npz")
    rc, out, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir,
                          capsys=capsys)
    assert rc == 0, err
    assert "resuming" not in out
    assert "[seed 0] cnn1.npz was not made by this run (dataset is 'mnist' now, " \
           "'fashion-mnist' then; made from other images or labels): training afresh" in out
    assert ran(out)[:2] == ["cnn1 (redone)", "ranking (redone)"], out
    results = json.loads((run_copy / "results.json").read_text())
    assert results["cnn1"]["test_accuracy"] == reference["test_accuracy"]     # bit for bit
    _made_from_holds(run_copy / "seed0")


def test_a_cnn1_of_another_seed_or_epoch_count_is_never_resumed(tmp_path, data_dir, capsys):
    base = ["train", "--limit", "300", "--no-progress"]
    for seed, epochs in ((0, 1), (1, 1), (1, 2)):
        rc, _, err = npskip(*base, "--seed", seed, "--epochs", epochs, "--out",
                            tmp_path / f"s{seed}e{epochs}", data_dir=data_dir, capsys=capsys)
        assert rc == 0, err
    s0, s1, s1e2 = tmp_path / "s0e1", tmp_path / "s1e1", tmp_path / "s1e2"
    accuracy = json.loads((s1 / "cnn1.json").read_text())["test_accuracy"]
    # seed 0's CNN1 and its JSON, copied into seed 1's folder: redone, not evaluated
    for name in ("cnn1.npz", "cnn1.json"):
        shutil.copy(s0 / name, s1 / name)
    rc, out, err = npskip(*base, "--seed", "1", "--epochs", "1", "--out", s1,
                          data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    assert "[seed 1] cnn1: redoing (seed is 1 now, 0 then; made from other images or " \
           "labels)" in out
    assert "cnn1.npz was not made by this run (seed is 1 now, 0 then" in out
    assert json.loads((s1 / "cnn1.json").read_text())["test_accuracy"] == accuracy
    # a 1-epoch CNN1 in a 2-epoch folder: trained afresh, not "resumed after epoch 1"
    shutil.copy(s1 / "cnn1.npz", s1e2 / "cnn1.npz")
    rc, out, err = npskip(*base, "--seed", "1", "--epochs", "2", "--out", s1e2,
                          data_dir=data_dir, capsys=capsys)
    assert rc == 0 and "resuming" not in out, err
    assert "cnn1.npz was not made by this run (epochs is 2 now, 1 then): training afresh" in out
    # and into an empty folder it is refused, naming why, with nothing overwritten
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(s0 / "cnn1.npz", empty / "cnn1.npz")
    rc, out, err = npskip(*base, "--seed", "1", "--epochs", "2", "--out", empty,
                          data_dir=data_dir, capsys=capsys)
    assert rc == 1 and "has no settings.json, and not every npskip file in it was made by " \
                       "this run:\n  cnn1.npz: epochs is 2 now, 1 then; seed is 1 now, 0 " \
                       "then; made from other images or labels" in err, err
    assert (empty / "cnn1.npz").read_bytes() == (s0 / "cnn1.npz").read_bytes()


def test_a_cnn1_of_npskip_train_serves_a_reproduction_with_its_settings(tmp_path, data_dir,
                                                                         capsys):
    # the records say what made a file, not which command: the same settings, the same file
    rc, _, err = npskip("train", "--limit", "300", "--epochs", "1", "--no-progress", "--out",
                        tmp_path / "t", data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    (tmp_path / "run" / "seed0").mkdir(parents=True)
    for name in ("cnn1.npz", "cnn1.json"):
        shutil.copy(tmp_path / "t" / name, tmp_path / "run" / "seed0" / name)
    rc, out, err = npskip("reproduce", *TINY, "--out", tmp_path / "run", data_dir=data_dir,
                          capsys=capsys)
    assert rc == 0, err
    assert "[seed 0] cnn1: done before, loaded cnn1.json" in out
    assert "records of its files (cnn1.json, cnn1.npz) show this data, seed and settings" in out


# --------------------------------------------------------------------------
# a stage whose inputs changed is redone, with everything built from it
# --------------------------------------------------------------------------

def _made_from_holds(folder):
    """Every stage's recorded inputs and outputs are the files now in the folder."""
    from npskip.harness.runfolder import sha256_file
    for path in folder.glob("*.json"):
        if path.name == "settings.json":
            continue
        made = json.loads(path.read_text())["made_from"]
        for f, digest in {**made["inputs"], **made["outputs"]}.items():
            assert sha256_file(folder / f) == digest, (path.name, f)


def test_a_changed_cnn2_redoes_exactly_the_stages_built_on_it(run_copy, data_dir, capsys):
    seed = run_copy / "seed0"
    model, opt, extra = checkpoint.load(seed / "cnn2.npz", with_optimizer=True)
    model.dense.params["b"][:] = [50, 0, 0]              # someone else's CNN2: all route 0
    checkpoint.save(seed / "cnn2.npz", model, opt, extra)
    rc, out, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir,
                          capsys=capsys)
    assert rc == 0, err
    assert ran(out) == ["cnn2 (redone)", "routes (redone)", "cnn3_deploy (redone)",
                        "controls (redone)", "efficiency (redone)"], out
    _made_from_holds(seed)
    assert json.loads((seed / "routes.json").read_text())["test_route_counts"] == [60, 0, 0]
    results = json.loads((run_copy / "results.json").read_text())
    assert results["cnn3_deploy"]["route_counts"] == [60, 0, 0]
    for stage in ("cnn2", "cnn3_deploy", "controls", "efficiency"):
        new = json.loads((seed / f"{stage}.json").read_text())
        for key, value in new.items():
            if key not in ("history", "stage_seconds", "made_from"):
                assert results[stage][key] == value, (stage, key)


def test_a_deleted_cnn1_is_retrained_and_what_it_feeds_is_checked(run_copy, data_dir, capsys):
    seed = run_copy / "seed0"
    for p in seed.glob("cnn1.*"):
        p.unlink()
    rc, out, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir,
                          capsys=capsys)
    assert rc == 0, err
    # CNN1 retrains bit for bit (same seed), so the ranking it gives is the same file and
    # CNN2 and CNN3 stand; the stages that read CNN1 itself are redone.
    assert ran(out) == ["cnn1", "ranking (redone)", "controls (redone)",
                        "efficiency (redone)"], out
    _made_from_holds(seed)


def test_a_checkpoint_trained_on_other_inputs_is_not_resumed(rng, tmp_path):
    x, y = rng.random((16, 6, 6, 1), dtype=np.float32), rng.integers(0, 2, 16)
    logs = []
    kw = {"epochs": 1, "progress": False, "log": logs.append, "batch_size": 8}
    fit_resumable(SkipCNN((6, 6, 1), 2, (10, 10)), tmp_path / "m.npz", x, y,
                  made_from={"a.npz": "1"}, **kw)
    _, hist = fit_resumable(SkipCNN((6, 6, 1), 2, (10, 10)), tmp_path / "m.npz", x, y,
                            made_from={"a.npz": "2"}, **{**kw, "epochs": 2})
    assert "m.npz was not made by this run (its record differs): training afresh" in logs
    assert len(hist["loss"]) == 2
    assert checkpoint.load(tmp_path / "m.npz", with_optimizer=True)[2]["made_from"] == \
        {"a.npz": "2"}


def _made_up_data(n=20):
    rng = np.random.default_rng(0)
    x, y = rng.random((n, 6, 6, 1), dtype=np.float32), rng.integers(0, 10, n)
    return x, y, x[:5], y[:5], x[:5], y[:5], (6, 6, 1), 10


def test_a_setting_of_one_stage_redoes_that_stage_and_no_other(tmp_path):
    # operating_tolerance belongs to the curve stage alone: the folder's record leaves it
    # out, the stage records it, and a change redoes that stage
    logs = []

    def run_with(tolerance):
        run = SeedRun(tmp_path, Config(operating_tolerance=tolerance, limit=20), 0,
                      _made_up_data(), log=logs.append)
        run.stage("a", lambda: {"v": 1})
        return run.stage("b", lambda: {"tolerance": tolerance}, inputs=["a.json"],
                         settings=["operating_tolerance"])
    run_with(0.002)
    logs.clear()
    assert run_with(0.003)["tolerance"] == 0.003
    assert logs == ["[seed 0] a: done before, loaded a.json",
                    "[seed 0] b: redoing (operating_tolerance is 0.003 now, 0.002 then)"]


# --------------------------------------------------------------------------
# broken or foreign files: named, with what to do, and nothing overwritten
# --------------------------------------------------------------------------

def _damage(path, how):
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[:len(raw) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    else:                                               # one byte of the weights flipped
        raw = bytearray(raw)
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["truncated", "emptied", "flipped"])
@pytest.mark.parametrize("stage", ["cnn1", "cnn2", "cnn3_paper", "cnn3_deploy"])
def test_a_damaged_checkpoint_of_a_finished_stage_is_trained_afresh(stage, how, run_copy,
                                                                     data_dir, capsys):
    path = run_copy / "seed0" / f"{stage}.npz"
    good = read_npz(path)
    _damage(path, how)
    rc, out, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir,
                          capsys=capsys)
    assert rc == 0, err
    assert f"[seed 0] {path}: truncated or not an npskip checkpoint (" in out, out
    assert ": deleted, trained afresh" in out and "resuming" not in out
    assert ran(out)[0] == f"{stage} (redone)", out
    # trained afresh, bit for bit the same weights (its history's timings differ, so the
    # stages that read it are checked again)
    again = read_npz(path)
    assert all(np.array_equal(again[k], v) for k, v in good.items() if k != "extra.json")
    _made_from_holds(run_copy / "seed0")


def test_a_changed_byte_anywhere_in_a_checkpoint_is_caught_or_harmless(tiny, tmp_path):
    # zip checks every entry's CRC, and load every weight's presence, shape and dtype: a
    # changed byte either makes the checkpoint unreadable, naming it, or sits in zip's
    # own bookkeeping and leaves every weight as it was
    good = (tiny / "seed0" / "cnn1.npz").read_bytes()
    weights = _weights(checkpoint.load(tiny / "seed0" / "cnn1.npz"))
    path = tmp_path / "cnn1.npz"
    places = [*range(300), *range(len(good) - 800, len(good)),
              *np.random.default_rng(0).integers(0, len(good), 100)]
    for i in places:
        raw = bytearray(good)
        raw[i] ^= 0x10
        path.write_bytes(bytes(raw))
        try:
            model = checkpoint.load(path)
        except checkpoint.CheckpointError as e:
            assert str(e).startswith(f"{path}: "), (i, e)
        else:
            got = _weights(model)
            assert got.keys() == weights.keys(), i
            assert all(np.array_equal(got[k], weights[k]) for k in weights), i


def _weights(model):
    return {f"{i}.{k}": v for i, layer in enumerate(model.layers) for k, v in layer.params.items()}


@pytest.mark.parametrize("content", [b"", b'{"test_accuracy": 0.5, "hist', b"{}", b"[1, 2]"],
                         ids=["empty", "truncated", "empty-object", "foreign"])
def test_a_broken_stage_json_is_named_and_the_report_kept(content, run_copy, data_dir, capsys):
    (run_copy / "seed0" / "cnn2.json").write_bytes(content)
    before = snapshot(run_copy)
    rc, _, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir, capsys=capsys)
    assert rc == 1 and "cnn2.json" in err and "delete it and rerun" in err, err
    assert "Traceback" not in err
    assert snapshot(run_copy) == before                # report.md, results.json as they were


def test_a_truncated_array_file_is_redone(run_copy, data_dir, capsys):
    path = run_copy / "seed0" / "ranking.npz"
    path.write_bytes(path.read_bytes()[:100])
    rc, out, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir,
                          capsys=capsys)
    assert rc == 0, err
    assert ran(out) == ["ranking (redone)"], out
    _made_from_holds(run_copy / "seed0")


def test_an_empty_checkpoint_without_its_json_is_named(run_copy, data_dir, capsys):
    (run_copy / "seed0" / "cnn1.json").unlink()
    (run_copy / "seed0" / "cnn1.npz").write_bytes(b"")
    rc, _, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir, capsys=capsys)
    assert rc == 1 and "cnn1.npz: truncated or not an npskip checkpoint" in err, err
    assert "delete" in err


def test_a_garbled_settings_record_has_a_way_out_that_keeps_the_stages(run_copy, data_dir,
                                                                        capsys):
    path = run_copy / "seed0" / "settings.json"
    record = path.read_text()
    path.write_text('{"settings": {"epo')
    rc, out, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir,
                          capsys=capsys)
    assert rc == 1 and "settings.json: truncated or not valid JSON" in err, err
    assert "delete it and rerun the same command: npskip writes it again when the records of " \
           "the stage files prove" in err and "Traceback" not in err
    path.unlink()                                       # the way out
    rc, out, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir,
                          capsys=capsys)
    assert rc == 0, err
    assert ran(out) == [] and "kept, and settings.json written again" in out
    assert json.loads(path.read_text()) == json.loads(record)


@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_an_out_that_is_a_file_is_named_with_the_way_out(command, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    for out, said in ((tmp_path / "afile", "afile is a file, not a folder; choose a folder "
                                            "(--out DIR)"),
                      (tmp_path / "afile" / "run", "a file stands where a folder should be; "
                                                   "choose a folder (--out DIR)")):
        rc, _, err = npskip(command, "--limit", "300", "--epochs", "1", "--out", out,
                            data_dir=tmp_path / "data", capsys=capsys)
        assert rc == 1 and said in err and "Traceback" not in err, err
    assert not (tmp_path / "data").exists()               # said before any work


def test_an_out_that_cannot_be_written_is_named_with_the_way_out(tmp_path, capsys, monkeypatch):
    # (the tests may run as root, whom chmod does not stop: the refusal is simulated)
    def read_only(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))
    monkeypatch.setattr(Path, "mkdir", read_only)
    rc, _, err = npskip("reproduce", *TINY, "--out", tmp_path / "ro", data_dir=tmp_path / "d",
                        capsys=capsys)
    assert rc == 1 and "Traceback" not in err, err
    assert f"cannot write {tmp_path / 'ro'}: Permission denied; choose a folder you can " \
           f"write (--out DIR)" in err


def test_a_full_disk_is_named_and_the_rerun_resumes(tmp_path, data_dir, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    base = ["train", "--limit", "300", "--epochs", "1", "--no-progress", "--out", tmp_path / "t"]
    with monkeypatch.context() as m:
        m.setattr(np, "savez", full)
        rc, _, err = npskip(*base, data_dir=data_dir, capsys=capsys)
    assert rc == 1 and "Traceback" not in err, err
    assert f"cannot write {tmp_path / 't' / 'cnn1.npz'}: the disk is full; free some space and " \
           f"rerun the same command" in err
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [".lock", "settings.json"]
    rc, out, err = npskip(*base, data_dir=data_dir, capsys=capsys)
    assert rc == 0 and "test accuracy" in out, err


# --------------------------------------------------------------------------
# one run per folder; seeds side by side end in one report
# --------------------------------------------------------------------------

def test_a_busy_seed_folder_is_refused(run_copy, data_dir, capsys):
    with FolderLock(run_copy / "seed0"):
        rc, _, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir,
                            capsys=capsys)
    assert rc == 1 and "seed0 is in use by another npskip run" in err, err


def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from npskip.harness.runfolder import FolderLock
        with FolderLock({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunFolderError, match=f"process {holder.pid}"):
        with FolderLock(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with FolderLock(tmp_path):                           # the kernel dropped the lock
        pass


def test_seeds_run_as_separate_commands_end_in_one_report(run_copy, data_dir, capsys):
    rc, out, err = npskip("reproduce", *TINY, "--seeds", "1", "--out", run_copy,
                          data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    results = json.loads((run_copy / "results.json").read_text())
    assert results["seeds"] == [0, 1] and set(results["per_seed"]) == {"0", "1"}
    assert results["config"]["seeds"] == [0, 1]
    assert "Seeds [0, 1]" in (run_copy / "report.md").read_text()


@pytest.fixture(scope="module")
def tiny_exits(tmp_path_factory, data_dir):
    """One finished tiny run with the early exits (seed 0, heads of 64 hidden units)."""
    out = tmp_path_factory.mktemp("tiny_exits") / "run"
    rc = cli.main(["reproduce", *EXITS, "--out", str(out), "--data-dir", str(data_dir),
                   "--mirror", MIRROR.as_uri()])
    assert rc == 0
    return out


def test_one_report_never_averages_two_exit_head_settings(tiny_exits, tmp_path, data_dir,
                                                          capsys):
    # the third case: seed 1 with one dense layer per head beside seed 0 with 64 units
    out = tmp_path / "run"
    shutil.copytree(tiny_exits, out)
    before, seed0 = snapshot(out), snapshot(out / "seed0")
    argv = ["reproduce", *EXITS, "--exit-hidden", "0", "--seeds", "1", "--out", out]
    rc, text, err = npskip(*argv, data_dir=data_dir, capsys=capsys)
    assert rc == 1 and "holds seeds made with other settings, and one report holds one " \
                       "configuration" in err, err
    assert "exits: exit_hidden: 64 in the folder, 0 now" in err and "--fresh" in err
    assert ran(text) == [] and snapshot(out) == before
    # --fresh starts seed 1 afresh; seed 0 is left alone, named, and left out
    rc, text, err = npskip(*argv, "--fresh", data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    assert snapshot(out / "seed0") == seed0
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [1] and list(results["left_out"]) == ["0"]
    assert "exits: exit_hidden: 64 in the folder, 0 now" in results["left_out"]["0"]
    assert "**Left out: seed 0**" in (out / "report.md").read_text()


def test_a_seed_without_the_exit_stages_is_left_out_of_a_report_with_them(tiny):
    folders, left_out = report_seeds(tiny, Config(limit=300, epochs=1))
    assert folders == {} and left_out == {0: "not finished: exits, exit_curve still to run"}
    folders, left_out = report_seeds(tiny, Config(limit=300, epochs=1, exits=False))
    assert list(folders) == [0] and left_out == {}


@pytest.fixture(scope="module")
def tiny_top5(tmp_path_factory, data_dir):
    """One finished tiny run of seed 1 whose ranking keeps 5 top images per map."""
    out = tmp_path_factory.mktemp("tiny_top5") / "run"
    rc = cli.main(["reproduce", *TINY, "--top-images", "5", "--seeds", "1", "--out", str(out),
                   "--data-dir", str(data_dir), "--mirror", MIRROR.as_uri()])
    assert rc == 0
    return out


def test_a_copy_of_one_seeds_folder_never_counts_as_another_seed(run_copy, data_dir, capsys):
    shutil.copytree(run_copy / "seed0", run_copy / "seed3")
    rc, out, err = npskip("reproduce", *TINY, "--seeds", "2", "--out", run_copy,
                          data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    results = json.loads((run_copy / "results.json").read_text())
    assert results["seeds"] == [0, 2] and "3" not in results["per_seed"]
    why = "its settings.json records seed 0, not 3 (a copy of another seed's folder?)"
    assert results["left_out"]["3"] == why and f"seed 3: left out of the report, {why}" in out
    assert f"**Left out: seed 3**, {why}" in (run_copy / "report.md").read_text()


def test_a_stage_file_of_other_settings_is_never_summarised(run_copy, tiny_top5, data_dir,
                                                            capsys):
    rc, _, err = npskip("reproduce", *TINY, "--seeds", "1", "--out", run_copy,
                        data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    for name in ("ranking.json", "ranking.npz"):          # a ranking of the top 5, copied in
        shutil.copy(tiny_top5 / "seed1" / name, run_copy / "seed1" / name)
    rc, out, err = npskip("reproduce", *TINY, "--seeds", "0", "--out", run_copy,
                          data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    results = json.loads((run_copy / "results.json").read_text())
    assert results["seeds"] == [0] and results["ranking"]["top"] == 10
    assert results["left_out"]["1"].startswith("stage files that a run of seed 1 would redo: "
                                               "ranking.json: top is 10 now, 5 then")
    report = (run_copy / "report.md").read_text()
    assert "top 10 images" in report and "**Left out: seed 1**, stage files" in report


def test_a_seed_folder_without_its_settings_record_is_left_out(run_copy):
    shutil.copytree(run_copy / "seed0", run_copy / "seed1")
    (run_copy / "seed1" / "settings.json").unlink()
    folders, left_out = report_seeds(run_copy, Config(limit=300, epochs=1, exits=False))
    assert list(folders) == [0]
    assert left_out == {1: "no settings.json, so nothing records what made it (a run of "
                           "seed 1 writes it)"}


def test_a_stage_file_changed_since_it_was_written_is_left_out(run_copy):
    (run_copy / "seed0" / "cnn2.npz").write_bytes(b"")
    folders, left_out = report_seeds(run_copy, Config(limit=300, epochs=1, exits=False))
    assert folders == {} and "cnn2.json: cnn2.npz changed since" in left_out[0]
    assert "efficiency.json: cnn2.npz changed since" in left_out[0]


def test_only_the_exact_name_seed_n_is_a_seed_folder(run_copy):
    for name in ("seed000", "seed001", "seed1.bak", "seed-1"):
        shutil.copytree(run_copy / "seed0", run_copy / name)
    assert seed_folders(run_copy) == {0: run_copy / "seed0"}
    shutil.rmtree(run_copy / "seed0")
    assert seed_folders(run_copy) == {}
    assert report_seeds(run_copy, Config(limit=300, epochs=1, exits=False)) == ({}, {})


def test_train_in_a_seed_folder_compares_only_what_cnn1_depends_on(tiny_top5, tmp_path,
                                                                     data_dir, capsys):
    # the reproduction ranked the top 5 images: CNN1 does not depend on that
    run = tmp_path / "run"
    shutil.copytree(tiny_top5, run)
    before = snapshot(run)
    rc, out, err = npskip("train", "--seed", "1", "--limit", "300", "--epochs", "1",
                          "--no-progress", "--out", run / "seed1", data_dir=data_dir,
                          capsys=capsys)
    assert rc == 0, err
    assert "[seed 1] cnn1: done before, loaded cnn1.json" in out and "test accuracy" in out
    assert snapshot(run) == before
    rc, _, err = npskip("train", "--seed", "1", "--limit", "300", "--epochs", "2", "--out",
                        run / "seed1", data_dir=data_dir, capsys=capsys)
    assert rc == 1 and "epochs: 1 in the folder, 2 now" in err and "top" not in err, err


def test_a_busy_folder_names_the_options_of_the_command_run(tmp_path, capsys):
    with FolderLock(tmp_path / "t"):
        rc, _, err = npskip("train", "--limit", "300", "--epochs", "1", "--out", tmp_path / "t",
                            data_dir=tmp_path / "d", capsys=capsys)
    assert rc == 1 and "is in use by another npskip run" in err, err
    assert "another --seed with no --out" in err and "--seeds" not in err
    with FolderLock(tmp_path / "r" / "seed0"):
        rc, _, err = npskip("reproduce", *TINY, "--out", tmp_path / "r",
                            data_dir=tmp_path / "d", capsys=capsys)
    assert rc == 1 and "(--seeds 0 in one command, --seeds 1 in the other)" in err, err
    assert not (tmp_path / "d").exists()                   # said before any work


@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_data_that_cannot_be_fetched_leaves_no_folder_behind(command, tmp_path, capsys):
    out = tmp_path / "runs" / "r"
    rc = cli.main([command, *TINY[:4], "--out", str(out), "--data-dir", str(tmp_path / "d"),
                   "--mirror", (tmp_path / "nowhere").as_uri()])
    _, err = capsys.readouterr()
    assert rc == 1 and "could not fetch train-images-idx3-ubyte.gz" in err, err
    assert not (tmp_path / "runs").exists()


def test_the_report_figures_cap_the_images_they_draw(tmp_path):
    from npskip.report import MAPS_DRAWN, TOP_DRAWN, draw_top_images
    x = np.zeros((500, 6, 6, 1), dtype=np.float32)
    tops = np.arange(12 * 200).reshape(1, 12, 200) % 500
    names = draw_top_images(tmp_path, tops, x)
    import matplotlib.image
    shape = matplotlib.image.imread(tmp_path / names[0]).shape
    small = draw_top_images(tmp_path / "small", tops[:, :MAPS_DRAWN, :TOP_DRAWN], x)
    assert shape == matplotlib.image.imread(tmp_path / "small" / small[0]).shape


# --------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------

def start_training(tmp_path, data_dir, limit):
    """`npskip train` in a child process that meets Ctrl-C as it would in a terminal."""
    cmd = [sys.executable, "-m", "npskip.cli", "train", "--limit", str(limit), "--epochs", "50",
           "--no-progress", "--out", str(tmp_path / "t"), "--data-dir", str(data_dir),
           "--mirror", MIRROR.as_uri()]
    # A shell that starts the test suite in the background (`pytest ... &`) hands its
    # children SIGINT ignored, and Python then installs no handler for it: restore the
    # default, so that the child meets Ctrl-C as it would in a terminal.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_says_how_to_resume(tmp_path, data_dir):
    proc = start_training(tmp_path, data_dir, 3000)
    for line in proc.stdout:
        if "epoch 1/50" in line:                         # training, a checkpoint saved
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; rerun the same command to resume" in err and "Traceback" not in err
    assert checkpoint.load(tmp_path / "t" / "cnn1.npz", with_optimizer=True)[2]["history"]


def _child(code, *argv):
    """Run ``code`` in a fresh interpreter, with numpy's import interrupted as Ctrl-C would
    interrupt it in the first second: (exit code, stderr)."""
    hook = textwrap.dedent("""
        import builtins, sys
        real = builtins.__import__
        def interrupted(name, *args, **kwargs):
            if name == "numpy":
                raise KeyboardInterrupt
            return real(name, *args, **kwargs)
        builtins.__import__ = interrupted
        """)
    run = subprocess.run([sys.executable, "-c", hook + textwrap.dedent(code), *argv],
                         capture_output=True, text=True, cwd=REPO)
    return run.returncode, run.stderr


@pytest.mark.parametrize("code", [
    "import runpy; sys.argv[0] = 'npskip'; runpy.run_module('npskip.cli', run_name='__main__')",
    "from npskip.cli import main; sys.exit(main())",           # the npskip command's own
    "import runpy; runpy.run_path('data_fetch.py', run_name='__main__')",
], ids=["python -m npskip.cli", "npskip", "data_fetch.py"])
def test_ctrl_c_while_the_modules_load_says_how_to_resume(code):
    rc, err = _child(code, "train")
    assert rc == 130 and err == "\ninterrupted; rerun the same command to resume\n", err


def test_ctrl_c_in_the_first_second_says_how_to_resume(tmp_path, data_dir):
    proc = start_training(tmp_path, data_dir, 300)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "\ninterrupted; rerun the same command to resume\n", err


# --------------------------------------------------------------------------
# the output: a reader that leaves, a full disk behind it
# --------------------------------------------------------------------------

def test_a_reader_that_leaves_ends_the_run_quietly(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "npskip.cli", "train", "--limit", "300", "--epochs", "1",
           "--no-progress", "--out", str(tmp_path / "t"), "--data-dir", str(data_dir),
           "--mirror", MIRROR.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout.readline().startswith(b"CNN1 on mnist")      # | head -1
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and err == "", err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_output_is_blamed_not_the_run_folder(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "npskip.cli", "train", "--limit", "300", "--epochs", "1",
           "--no-progress", "--out", str(tmp_path / "t"), "--data-dir", str(data_dir),
           "--mirror", MIRROR.as_uri()]
    with open("/dev/full", "w") as full:
        run = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert run.returncode == 1, run.stderr
    assert run.stderr == "error: cannot write the output (standard output): No space left on " \
                         "device; the run stopped there: send the output elsewhere and rerun " \
                         "the same command to resume\n", run.stderr
