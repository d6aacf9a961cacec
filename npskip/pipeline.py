"""The paper's three networks end to end, as resumable stages in a run folder.

    cnn1        train CNN1 (the full network) on the training split
    ranking     strongest activations of CNN1 -> labelled images (npskip.ranking)
    cnn2        the router: a CNN predicting the label from the pixels
    cnn3_paper  CNN3 trained, validated and tested on the labelled images, routed
                by their activation labels (the paper's literal protocol)
    routes      CNN2's route for every training, validation and test image
    cnn3_deploy CNN3 trained on the full training set with CNN2's routes, tested
                on the standard test set with CNN2's routes
    controls    CNN3-deploy on the test set under other routings: all route 0,
                all route 1, random routes in CNN2's proportions, the oracle
    efficiency  multiply-adds and measured wall-clock of routed inference vs CNN1

Each stage writes ``<stage>.json`` (and a checkpoint where it trains) into the
seed's folder when it finishes, the checkpoint first; a rerun loads finished
stages instead of redoing them, and an interrupted training resumes at its last
epoch. The folder records the settings that made it and each stage the files it
was built from (npskip.runfolder): a rerun with other settings is refused, and
a stage whose inputs changed is redone, with everything built from it.
"""

import json
import math
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import checkpoint
from .checks import ConfigError, check_int, is_int
from .data import DATASETS, as_float32, load
from .runfolder import FolderLock, RunFolderError, check_settings, data_identity, read_json, \
    sha256_file
from .model import SkipCNN
from .ranking import rank
from .stats import confusion_matrix, majority_baseline, stratified_split, wilson_interval
from .train import evaluate, fit_resumable, predict, predict_by_route

PAPER = {"cnn1_test_accuracy": 0.98, "cnn2_test_accuracy": 0.62,
         "cnn3_test_accuracy": "close to 1.00", "efficiency": "improved (not measured)"}


def _is_real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def check_fraction(name, value, high_closed=False):
    """``value`` in (0, 1), or (0, 1] with high_closed; NaN is refused."""
    ok = _is_real(value) and not math.isnan(value) and 0 < value and (
        value <= 1 if high_closed else value < 1)
    if not ok:
        raise ConfigError(name, value, "a number in (0, 1]" if high_closed
                          else "a number in (0, 1), both ends excluded")
    return float(value)


def check_widths(name, value, least):
    """A tuple of at least ``least`` positive ints (maps per conv layer)."""
    try:
        widths = tuple(value)
    except TypeError:
        widths = None
    if not widths or len(widths) < least or not all(is_int(w) and w >= 1 for w in widths):
        need = "at least two positive integers (one layer leaves nothing to skip)" \
            if least == 2 else f"at least {least} positive integer(s)"
        raise ConfigError(name, value, need)
    return tuple(int(w) for w in widths)


@dataclass
class Config:
    """Everything a run depends on; every field is checked when it is made (ConfigError).

    The seed folder records all of them but ``seeds``, ``labels`` and ``router``
    (which choose stages whose names carry them) in settings.json."""
    dataset: str = "mnist"
    epochs: int = 20
    batch_size: int = 128
    widths: tuple = (16, 16, 32)
    maps: int = 10
    top: int = 10
    val_fraction: float = 0.1
    limit: int = None          # use the first N training images (and N/5 test images)
    seeds: list = field(default_factory=lambda: [0])
    timing_repeats: int = 3
    # Beyond the paper (npskip.extension): how images are routed. "exit": CNN1 with an
    # exit head after each conv layer but the last, each image leaving at the first
    # confident one (npskip.exits); "small" (SkipCNN on 2x-pooled images) or "full"
    # (CNN2's size): a router trained on ``labels`` in front of CNN3-any; "none".
    labels: str = "behaviour"        # "behaviour" (CNN3-any's own) or "activation" (the paper's)
    router: str = "exit"
    exit_epochs: int = 10            # epochs of the exit heads' training (CNN1 frozen)
    exit_hidden: int = 64            # hidden units of each exit head (0: one dense layer)
    exit_pool: int = 2               # each exit head averages its maps over pool x pool blocks
    router_widths: tuple = (8, 16)
    label_confidence: float = 0.9
    # The operating point (npskip.selection.choose_operating_point): a threshold is taken
    # only if the upper confidence bound (one-sided, this confidence) of its accuracy loss
    # against CNN1, paired on the validation images, is within the tolerance.
    operating_tolerance: float = 0.002    # the target's 0.2 points: bound plus test noise (selection)
    operating_confidence: float = 0.95
    # How CNN3-any is trained: its starting weights ("cnn1": CNN1's trained weights, or
    # "fresh"), the probability of each route in its random draws (None: uniform), and
    # distillation from CNN1 (weight 0: plain cross-entropy; losses.distillation_loss).
    # "cnn1" is the default because it was the only way, of five compared over two
    # seeds, whose full route beat CNN1 (README, "Training CNN3-any").
    any_init: str = "cnn1"
    any_route_weights: tuple = None
    any_distill_weight: float = 0.0
    any_temperature: float = 4.0

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ConfigError("dataset", self.dataset, f"one of {sorted(DATASETS)}")
        self.epochs = check_int("epochs", self.epochs, 1)
        self.batch_size = check_int("batch_size", self.batch_size, 1)
        self.widths = check_widths("widths", self.widths, 2)
        self.maps = check_int("maps", self.maps, 1)
        if min(self.widths) < self.maps:        # ranking reads the first `maps` of every layer
            raise ConfigError("widths", self.widths, f"at least {self.maps} maps in every layer, "
                              f"as the ranking reads the first {self.maps} of each (maps, "
                              f"--maps)")
        if self.limit is not None:
            self.limit = check_int("limit", self.limit, 1)
        # the top images of a map are distinct training images
        self.top = check_int("top", self.top, 1, self.limit)
        self.val_fraction = check_fraction("val_fraction", self.val_fraction)
        try:
            seeds = list(self.seeds)
        except TypeError:
            seeds = [self.seeds]
        self.seeds = [check_int("seeds", s, 0) for s in seeds]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", seeds, "one or more distinct integers >= 0")
        self.timing_repeats = check_int("timing_repeats", self.timing_repeats, 1)
        if self.labels not in ("behaviour", "activation"):
            raise ConfigError("labels", self.labels, "'behaviour' or 'activation'")
        if self.router not in ("exit", "small", "full", "none"):
            raise ConfigError("router", self.router, "'exit', 'small', 'full' or 'none'")
        self.exit_epochs = check_int("exit_epochs", self.exit_epochs, 1)
        self.exit_hidden = check_int("exit_hidden", self.exit_hidden, 0)
        self.exit_pool = check_int("exit_pool", self.exit_pool, 1)
        self.router_widths = check_widths("router_widths", self.router_widths, 1)
        self.label_confidence = check_fraction("label_confidence", self.label_confidence,
                                               high_closed=True)
        tol = self.operating_tolerance
        if not _is_real(tol) or not 0 <= tol < 1:          # NaN fails both comparisons
            raise ConfigError("operating_tolerance", tol, "a number in [0, 1)")
        self.operating_confidence = check_fraction("operating_confidence",
                                                   self.operating_confidence)
        if self.any_init not in ("fresh", "cnn1"):
            raise ConfigError("any_init", self.any_init, "'fresh' or 'cnn1'")
        w = self.any_route_weights
        if w is not None:
            try:
                ok = len(w) == len(self.widths) and all(_is_real(p) and p >= 0 for p in w) \
                    and abs(sum(w) - 1) <= 1e-9
            except TypeError:
                ok = False
            if not ok:
                raise ConfigError("any_route_weights", w, f"None or {len(self.widths)} "
                                  f"non-negative probabilities summing to 1")
            self.any_route_weights = tuple(float(p) for p in w)
        d = self.any_distill_weight
        if not _is_real(d) or not 0 <= d <= 1:
            raise ConfigError("any_distill_weight", d, "a number in [0, 1]")
        t = self.any_temperature
        if not _is_real(t) or not 0 < t < math.inf:
            raise ConfigError("any_temperature", t, "a positive finite number")


def write_json(path, obj):
    """Write JSON atomically (temporary name, then rename). NaN and infinities are
    refused (ValueError naming the file): they are not JSON."""
    try:
        text = json.dumps(obj, indent=2, default=_jsonable, allow_nan=False).encode()
    except ValueError as e:
        raise ValueError(f"{path}: refusing to write a NaN or infinity ({e})") from None
    checkpoint.atomic_write(path, lambda f: f.write(text))


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def save_arrays(path, **arrays):
    """Write arrays to an .npz atomically."""
    checkpoint.atomic_write(path, lambda f: np.savez(f, **arrays))


def accuracy_record(correct, n):
    """{"test_accuracy", "test_count", "ci95"} for `correct` right out of n."""
    return {"test_accuracy": correct / n if n else None, "test_count": int(n),
            "ci95": wilson_interval(int(correct), int(n))}


# Settings that do not go into a seed folder's record: which seeds run, and which
# labelling and router the extension trains (their stage names carry them, so runs
# with other choices sit side by side in one folder); and the settings of one
# extension stage each, which that stage records instead (STAGE_SETTINGS): changing
# one redoes that stage and what is built on it.
STAGE_SETTINGS = {
    "cnn3_any": ("any_init", "any_route_weights", "any_distill_weight", "any_temperature"),
    "curve": ("operating_tolerance", "operating_confidence"),
    "exits": ("exit_epochs", "exit_hidden", "exit_pool"),
}
NOT_RECORDED = ("seeds", "labels", "router") + sum(STAGE_SETTINGS.values(), ())


def folder_record(config, seed, data):
    """What settings.json holds for one seed folder: settings and the data's identity."""
    settings = {k: v for k, v in config_dict(config).items() if k not in NOT_RECORDED}
    return {"settings": {**settings, "seed": seed},
            "data": data_identity(config.dataset, data[:6])}


class SeedRun:
    """One seed of the pipeline, in ``folder``; stages are methods, results are cached.

    data: what load_data returns. fresh: delete the folder's stage files first.
    Raises RunFolderError if the folder was made with other settings or other
    data (naming each difference), or is in use by another run.
    """

    def __init__(self, folder, config, seed, data, progress=True, log=print, fresh=False):
        self.folder, self.config = Path(folder), config
        self.seed = check_int("seed", seed, 0)
        self.progress, self.log = progress, log
        self.x_tr, self.y_tr, self.x_val, self.y_val, self.x_te, self.y_te, \
            self.input_shape, self.num_classes = data
        if config.top > len(self.y_tr):
            raise ConfigError("top", config.top, f"at most the {len(self.y_tr)} training images")
        self.results = {}
        self._fingerprints = {}
        # Held by a stage while it runs, and by the command around all of them.
        self.lock = FolderLock(self.folder)
        with self.lock:
            check_settings(self.folder, folder_record(config, self.seed, data), fresh)

    # -- helpers ---------------------------------------------------------
    def fingerprint(self, name):
        """SHA-256 of a file in the folder (remembered while its size and mtime hold)."""
        path = self.folder / name
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        if self._fingerprints.get(name, (None,))[0] != key:
            self._fingerprints[name] = (key, sha256_file(path))
        return self._fingerprints[name][1]

    def stage(self, name, fn, inputs=(), outputs=(), settings=()):
        """Run stage ``name`` (fn() -> JSON-able dict) unless it is finished and current.

        inputs: files of the folder the stage is built from (its upstream stages must
        have run); outputs: files it writes besides ``<name>.json``; settings: Config
        fields only this stage depends on (the folder's settings.json leaves them out).
        Finished and current means: ``<name>.json`` exists and its ``made_from`` record
        matches those settings and the SHA-256 of every input and output now. Otherwise the stage is redone: its arrays are
        computed again; a checkpoint is trained afresh if it was trained on other
        inputs (train() checks), and is only evaluated again if it is finished and
        merely differs from what the JSON describes (say, a CNN1 copied in).
        """
        if name in self.results:                 # checked or made earlier in this session
            return self.results[name]
        path = self.folder / f"{name}.json"
        with self.lock:
            cfg = config_dict(self.config)
            made_from = {"inputs": {f: self.fingerprint(f) for f in inputs},
                         "settings": {k: cfg[k] for k in settings}}
            if path.exists():
                old = read_json(path, f"delete it and rerun to redo the {name} stage")
                why = self._stale(path, old, made_from, outputs)
                if why is None:
                    self.results[name] = old
                    self.log(f"[seed {self.seed}] {name}: done before, loaded {path.name}")
                    return old
                self.log(f"[seed {self.seed}] {name}: redoing ({why})")
                path.unlink()
            else:
                self.log(f"[seed {self.seed}] {name}: running")
            start = time.perf_counter()
            self._made_from = dict(made_from)      # what train() stamps its checkpoint with
            result = fn()
            result["stage_seconds"] = time.perf_counter() - start
            made_from["outputs"] = {f: self.fingerprint(f) for f in outputs}
            result["made_from"] = made_from
            write_json(path, result)             # last: only once its outputs are in place
        self.results[name] = result
        return result

    def _stale(self, path, old, now, outputs):
        """Why a finished stage's record does not match the folder now, or None."""
        made = old.get("made_from")
        if not isinstance(made, dict) or not isinstance(made.get("inputs"), dict) \
                or not isinstance(made.get("outputs"), dict):
            raise RunFolderError(f"{path}: no made_from record, so not a finished stage of this "
                                 f"npskip (written by an older version, or not by npskip); "
                                 f"delete it and rerun to redo the stage, or start the folder "
                                 f"afresh with --fresh")
        for k, value in now["settings"].items():
            if made.get("settings", {}).get(k, "(not recorded)") != value:
                return f"{k} is {value!r} now, {made.get('settings', {}).get(k)!r} then"
        for f, digest in now["inputs"].items():
            if made["inputs"].get(f) != digest:
                return f"{f}, which it is built from, changed since"
        for f in outputs:
            if not (self.folder / f).exists():
                return f"{f} is missing"
            if made["outputs"].get(f) != self.fingerprint(f):
                return f"{f} changed since {path.name} was written"
        return None

    def model(self, name):
        try:
            return checkpoint.load(self.folder / f"{name}.npz")
        except checkpoint.CheckpointError as e:
            raise checkpoint.CheckpointError(f"{e}; delete {name}.npz and {name}.json and rerun "
                                             f"to redo that stage") from None

    def arrays(self, name):
        """Every array of ``name`` (.npz in the folder) as a dict; RunFolderError if broken."""
        path = self.folder / name
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise RunFolderError(f"{path}: missing, truncated or not npskip's ({e}); delete it "
                                 f"and the .json of the same name and rerun to redo that "
                                 f"stage") from None

    def new_model(self, classes, network):
        """Fresh weights for CNN ``network`` (1, 2, 3): CNN1 is seeded by the seed
        alone, as ``npskip train`` does; the others by (seed, network)."""
        seed = self.seed if network == 1 else [self.seed, network]
        return SkipCNN(self.input_shape, classes, self.config.widths, seed=seed)

    def train(self, name, model, x, y, routes=None, val=None, **fit_args):
        """Train with a checkpoint per epoch (resumable). Returns (model, history).

        fit_args go to train.fit (e.g. loss=...). The checkpoint carries the stage's
        input fingerprints: one left by an interrupted run on other inputs is not
        resumed."""
        return fit_resumable(model, self.folder / f"{name}.npz", x, y, routes=routes,
                             epochs=self.config.epochs, batch_size=self.config.batch_size,
                             validation_data=val, seed=self.seed, progress=self.progress,
                             log=lambda m: self.log(f"[seed {self.seed}] {m}"),
                             made_from=self._made_from, **fit_args)

    # -- stages ----------------------------------------------------------
    def run_cnn1(self):
        def go():
            model, hist = self.train("cnn1", self.new_model(self.num_classes, 1),
                                     self.x_tr, self.y_tr, val=(self.x_val, self.y_val))
            loss, acc = evaluate(model, self.x_te, self.y_te)
            correct = int(round(acc * len(self.y_te)))
            return {**accuracy_record(correct, len(self.y_te)), "test_loss": loss,
                    "train_count": len(self.y_tr), "val_count": len(self.y_val),
                    "history": hist, "flops_per_image": model.flops()["total"]}
        return self.stage("cnn1", go, outputs=["cnn1.npz"])

    def run_ranking(self):
        self.run_cnn1()

        def go():
            r = rank(self.model("cnn1"), self.x_tr, self.config.maps, self.config.top,
                     progress=self.progress)
            save_arrays(self.folder / "ranking.npz", indices=r["indices"], labels=r["labels"],
                        picks=r["picks"], tops=np.stack(r["tops"]))
            counts = np.bincount(r["labels"], minlength=len(self.config.widths))
            return {"label_counts": counts.tolist(), "unique_images": len(r["indices"]),
                    "total_picks": int(r["picks"].sum()),
                    "images_picked_more_than_once": int(np.count_nonzero(r["picks"] > 1)),
                    "maps": self.config.maps, "top": self.config.top,
                    "ranked_over": len(self.x_tr)}
        return self.stage("ranking", go, inputs=["cnn1.npz"], outputs=["ranking.npz"])

    def labelled(self):
        """(images, digit labels, route labels, split positions) of the ranked images."""
        r = self.arrays("ranking.npz")
        idx, routes = r["indices"], r["labels"]
        split = stratified_split(routes, seed=self.seed)
        if min(len(s) for s in split) == 0:
            # too few ranked images to train, validate and test CNN2 and CNN3-paper on
            sizes = "/".join(str(len(s)) for s in split)
            raise ConfigError("top", self.config.top,
                              f"more labelled images: the first {self.config.maps} maps x top "
                              f"{self.config.top} gave {len(idx)} unique images, split "
                              f"{sizes} (train/validation/test), and each split needs one; "
                              f"raise --top-images, --maps or --limit")
        return self.x_tr[idx], self.y_tr[idx], routes, split

    def run_cnn2(self):
        self.run_ranking()

        def go():
            x, _, routes, (tr, val, te) = self.labelled()
            depth = len(self.config.widths)
            model, hist = self.train("cnn2", self.new_model(depth, 2), x[tr], routes[tr],
                                     val=(x[val], routes[val]))
            pred = predict(model, x[te]).argmax(axis=1)
            correct = int(np.count_nonzero(pred == routes[te]))
            return {**accuracy_record(correct, len(te)),
                    "majority_baseline": majority_baseline(routes[tr], routes[te]),
                    "confusion_matrix": confusion_matrix(routes[te], pred, depth).tolist(),
                    "split_counts": {name: np.bincount(routes[s], minlength=depth).tolist()
                                     for name, s in (("train", tr), ("val", val), ("test", te))},
                    "history": hist, "flops_per_image": model.flops()["total"]}
        return self.stage("cnn2", go, inputs=["ranking.npz"], outputs=["cnn2.npz"])

    def run_cnn3_paper(self):
        self.run_ranking()

        def go():
            x, y, routes, (tr, val, te) = self.labelled()
            model, hist = self.train("cnn3_paper", self.new_model(self.num_classes, 3), x[tr],
                                     y[tr], routes=routes[tr], val=(x[val], y[val], routes[val]))
            pred = predict(model, x[te], routes[te]).argmax(axis=1)
            correct = int(np.count_nonzero(pred == y[te]))
            return {**accuracy_record(correct, len(te)),
                    "train_count": len(tr), "val_count": len(val),
                    "majority_baseline": majority_baseline(y[tr], y[te]), "history": hist}
        return self.stage("cnn3_paper", go, inputs=["ranking.npz"], outputs=["cnn3_paper.npz"])

    def run_routes(self):
        self.run_cnn2()

        def go():
            router = self.model("cnn2")
            out = {name: predict(router, x).argmax(axis=1)
                   for name, x in (("train", self.x_tr), ("val", self.x_val), ("test", self.x_te))}
            save_arrays(self.folder / "routes.npz", **out)
            depth = len(self.config.widths)
            return {f"{k}_route_counts": np.bincount(v, minlength=depth).tolist()
                    for k, v in out.items()}
        return self.stage("routes", go, inputs=["cnn2.npz"], outputs=["routes.npz"])

    def cnn2_routes(self):
        r = self.arrays("routes.npz")
        return r["train"], r["val"], r["test"]

    def run_cnn3_deploy(self):
        self.run_routes()

        def go():
            r_tr, r_val, r_te = self.cnn2_routes()
            model, hist = self.train("cnn3_deploy", self.new_model(self.num_classes, 3),
                                     self.x_tr, self.y_tr, routes=r_tr,
                                     val=(self.x_val, self.y_val, r_val))
            pred = predict(model, self.x_te, r_te).argmax(axis=1)
            correct = int(np.count_nonzero(pred == self.y_te))
            return {**accuracy_record(correct, len(r_te)),
                    "route_counts": np.bincount(r_te, minlength=model.depth).tolist(),
                    "flops_fraction": float(model.flops_per_image(r_te).mean()
                                            / model.flops()["total"]),
                    "history": hist}
        return self.stage("cnn3_deploy", go, inputs=["routes.npz"],
                          outputs=["cnn3_deploy.npz"])

    def run_controls(self):
        self.run_cnn1()
        self.run_cnn3_deploy()

        def go():
            model = self.model("cnn3_deploy")
            depth, n = model.depth, len(self.y_te)
            _, _, r_cnn2 = self.cnn2_routes()
            # right[r, i]: is CNN3-deploy right on test image i when it takes route r?
            right = np.stack([predict(model, self.x_te, np.full(n, r)).argmax(axis=1) == self.y_te
                              for r in range(depth)])
            full = model.flops()["total"]
            rng = np.random.default_rng(self.seed)
            anyright = right.any(axis=0)
            oracle = np.where(anyright, right.argmax(axis=0), depth - 1)   # cheapest right route
            routings = {"cnn2": r_cnn2, "random_cnn2_proportions": rng.permutation(r_cnn2),
                        "oracle": oracle}
            routings.update({f"all_route_{r}": np.full(n, r) for r in range(depth)})
            cnn1 = self.run_cnn1()           # loaded: CNN1 is the first control
            out = {"cnn1": {**accuracy_record(int(round(cnn1["test_accuracy"] * n)), n),
                            "flops_fraction": 1.0}}
            for name, routes in routings.items():
                correct = int(np.count_nonzero(right[routes, np.arange(n)]))
                out[name] = {**accuracy_record(correct, n),
                             "flops_fraction": float(model.flops_per_image(routes).mean() / full),
                             "route_counts": np.bincount(routes, minlength=depth).tolist()}
            out["oracle"]["note"] = ("cheapest route on which CNN3-deploy is right; images wrong "
                                     "on every route count as wrong on the full route")
            return out
        return self.stage("controls", go, inputs=["cnn1.npz", "routes.npz", "cnn3_deploy.npz"])

    def run_efficiency(self):
        self.run_cnn1()
        self.run_cnn3_deploy()

        def go():
            cnn1, router, cnn3 = self.model("cnn1"), self.model("cnn2"), self.model("cnn3_deploy")
            _, _, r_te = self.cnn2_routes()
            full = cnn1.flops()["total"]
            per_image = cnn3.flops_per_image(r_te)
            with_router = per_image + router.flops()["total"]
            t_cnn1, t_routed = time_routed_inference(cnn1, router, cnn3, self.x_te,
                                                     self.config.timing_repeats)
            return {
                "route_counts": np.bincount(r_te, minlength=cnn3.depth).tolist(),
                "cnn1_flops_per_image": full,
                "router_flops_per_image": router.flops()["total"],
                "flops_per_image_without_router": {"mean": per_image.mean(), "std": per_image.std()},
                "flops_per_image_with_router": {"mean": with_router.mean(), "std": with_router.std()},
                "flops_fraction_without_router": per_image.mean() / full,
                "flops_fraction_with_router": with_router.mean() / full,
                "wall_seconds_cnn1": t_cnn1, "wall_seconds_router_plus_cnn3": t_routed,
                "wall_fraction": float(np.median(t_routed) / np.median(t_cnn1)),
                "timed_images": len(r_te), "timing_repeats": self.config.timing_repeats,
            }
        return self.stage("efficiency", go, inputs=["cnn1.npz", "cnn2.npz", "routes.npz",
                                                    "cnn3_deploy.npz"])

    def run_all(self):
        for stage in (self.run_cnn1, self.run_ranking, self.run_cnn2, self.run_cnn3_paper,
                      self.run_routes, self.run_cnn3_deploy, self.run_controls,
                      self.run_efficiency):
            stage()
        return self.results


def routed_predict(router, model, x, batch_size=256):
    """CNN2 picks each image's route, then CNN3 runs the images sorted by route.

    Returns (logits (N, classes), routes (N,)).
    """
    routes = predict(router, x, batch_size=batch_size).argmax(axis=1)
    return predict_by_route(model, x, routes, batch_size), routes


def time_routed_inference(cnn1, router, cnn3, x, repeats=3):
    """Wall-clock seconds of CNN1 alone and of router + routed CNN3 on x, ``repeats`` each.

    The two are interleaved so that a slow spell of a shared machine hits both.
    """
    predict(cnn1, x[:256])                       # compile and warm the buffers first
    routed_predict(router, cnn3, x[:256])
    t1, t2 = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(cnn1, x)
        t1.append(time.perf_counter() - start)
        start = time.perf_counter()
        routed_predict(router, cnn3, x)
        t2.append(time.perf_counter() - start)
    return t1, t2


def load_data(config, seed, data_dir=None, mirror=None):
    """Float32 splits for one seed (the validation split depends on the seed)."""
    ds = load(config.dataset, data_dir=data_dir, mirror=mirror)
    x_tr, y_tr, x_val, y_val = ds.validation_split(config.val_fraction, seed=seed)
    x_te, y_te = ds.x_test, ds.y_test
    if config.limit:
        small = max(config.limit // 5, 1)
        x_tr, y_tr = x_tr[:config.limit], y_tr[:config.limit]
        x_val, y_val, x_te, y_te = x_val[:small], y_val[:small], x_te[:small], y_te[:small]
    return (as_float32(x_tr), y_tr, as_float32(x_val), y_val, as_float32(x_te), y_te,
            ds.input_shape, ds.num_classes)


def config_dict(config):
    d = asdict(config)
    d["widths"] = list(config.widths)
    d["router_widths"] = list(config.router_widths)
    if config.any_route_weights is not None:
        d["any_route_weights"] = list(config.any_route_weights)
    return d
