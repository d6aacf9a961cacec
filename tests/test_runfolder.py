"""Run folders that cannot lie: arguments checked before any work, the settings a
folder was made with recorded and enforced, stale stages redone with everything
built from them, broken files named, one run per folder, seeds side by side.

The runs here are tiny (300 training images, one epoch, the paper's stages only):
what is tested is the bookkeeping, not the numbers.
"""

import json
import math
import shutil
import signal
import subprocess
import sys
import textwrap
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
from npskip.harness.runfolder import FolderLock, RunFolderError
from npskip.harness.checkpoint import fit_resumable

from test_data import MIRROR

REPO = Path(__file__).resolve().parents[1]
TINY = ["--limit", "300", "--epochs", "1", "--no-exits", "--no-progress"]
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
    with pytest.raises(ConfigError, match=r"top: expected an integer in 1\.\.5, received 10"):
        Config(limit=5, top=10)


@pytest.mark.parametrize("argv, named", [
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, received 0"),
    (["--epochs", "-3"], "argument --epochs: expected an integer >= 1, received -3"),
    (["--limit", "0"], "argument --limit: expected an integer >= 1, received 0"),
    (["--limit", "-5"], "argument --limit: expected an integer >= 1, received -5"),
    (["--maps", "0"], "argument --maps: expected an integer >= 1, received 0"),
    (["--maps", "17"], "argument --widths: expected at least 17 maps in every layer"),
    (["--top-images", "0"], "argument --top-images: expected an integer >= 1, received 0"),
    (["--val-fraction", "1.5"], "argument --val-fraction: expected a number in (0, 1)"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, received 0"),
    (["--seeds", "-1"], "argument --seeds: expected an integer >= 0, received -1"),
    (["--exit-epochs", "0"], "argument --exit-epochs: expected an integer >= 1, received 0"),
    (["--exit-hidden", "-1"], "argument --exit-hidden: expected an integer >= 0, received -1"),
    (["--widths", "16"], "argument --widths: expected at least two positive integers"),
    (["--widths", "-5,16"], "received -5,16"),
    (["--widths", "16,x"], "argument --widths: expected comma-separated integers"),
])
def test_cli_refuses_a_bad_argument_before_any_work(argv, named, tmp_path, capsys):
    rc, _, err = npskip("reproduce", *argv, "--out", tmp_path / "run",
                        data_dir=tmp_path / "data", capsys=capsys)
    assert rc == 2 and named in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_train_refuses_zero_epochs_and_a_negative_seed(tmp_path, capsys):
    for argv, named in ((["--epochs", "0"], "argument --epochs"), (["--seed", "-1"],
                                                                    "argument --seed:")):
        rc, _, err = npskip("train", *argv, "--out", tmp_path / "t", data_dir=tmp_path / "d",
                            capsys=capsys)
        assert rc == 2 and named in err, err
    assert not (tmp_path / "t").exists()


def test_too_few_labelled_images_for_cnn2_is_a_message(tmp_path, data_dir, capsys):
    rc, _, err = npskip("reproduce", "--limit", "5", "--maps", "1", "--top-images", "1",
                        "--epochs", "1", "--no-exits", "--no-progress", "--out",
                        tmp_path / "run", data_dir=data_dir, capsys=capsys)
    assert rc == 2 and "argument --top-images: expected more labelled images" in err, err
    assert "raise --top-images, --maps or --limit" in err


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


def test_fresh_starts_the_folder_afresh(run_copy, data_dir, capsys):
    shutil.copytree(run_copy / "seed0", run_copy / "seed3")     # another finished seed
    args = [a for a in TINY if a not in ("--epochs", "1")]
    rc, out, err = npskip("reproduce", *args, "--epochs", "2", "--fresh", "--out", run_copy,
                          data_dir=data_dir, capsys=capsys)
    assert rc == 0, err
    assert ran(out) == PAPER_STAGES
    results = json.loads((run_copy / "results.json").read_text())
    assert results["config"]["epochs"] == 2 and results["seeds"] == [0]
    assert not [p for p in (run_copy / "seed3").iterdir() if p.suffix in (".json", ".npz")]
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


def test_a_folder_without_a_settings_record_is_refused(run_copy, data_dir, capsys):
    (run_copy / "seed0" / "settings.json").unlink()       # as an older npskip left it
    rc, _, err = npskip("reproduce", *TINY, "--out", run_copy, data_dir=data_dir, capsys=capsys)
    assert rc == 1 and "no settings.json" in err and "--fresh" in err, err


def test_other_data_in_the_same_folder_is_refused(tiny, data_dir):
    config = Config(epochs=1, limit=300, exits=False)
    data = list(load_data(config, 0, data_dir))
    data[0] = data[0][::-1].copy()                        # same settings, other images
    with pytest.raises(RunFolderError, match="data: arrays_sha256"):
        SeedRun(tiny / "seed0", config, 0, tuple(data), log=lambda m: None)


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
    assert "m.npz was trained from other inputs; training afresh" in logs
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

def test_ctrl_c_says_how_to_resume(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "npskip.cli", "train", "--limit", "3000", "--epochs", "50",
           "--no-progress", "--out", str(tmp_path / "t"), "--data-dir", str(data_dir),
           "--mirror", MIRROR.as_uri()]
    # A shell that starts the test suite in the background (`pytest ... &`) hands its
    # children SIGINT ignored, and Python then installs no handler for it: restore the
    # default, so that the child meets Ctrl-C as it would in a terminal.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if "epoch 1/50" in line:                         # training, a checkpoint saved
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; rerun the same command to resume" in err and "Traceback" not in err
    assert checkpoint.load(tmp_path / "t" / "cnn1.npz", with_optimizer=True)[2]["history"]
