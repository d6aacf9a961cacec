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
epoch. The folder records the settings that made it, and every stage file and
checkpoint its own record: the data, the seed, the settings it depends on and
the files it was built from (npskip.harness.runfolder). A rerun with other
settings is refused; a file whose record does not match the run is redone, with
everything built from it.
"""

import time
from pathlib import Path

import numpy as np

from npskip.engine.checks import check_int
from npskip.engine.model import SkipCNN
from npskip.engine.train import evaluate, predict, predict_by_route
from npskip.harness import checkpoint
from npskip.harness.checkpoint import fit_resumable
from npskip.harness.config import NOT_RECORDED, check_data, config_dict, stage_settings
from npskip.harness.config import Config  # noqa: F401  (the notebooks import it from here)
from npskip.harness.data import as_float32, load
from npskip.harness.runfolder import (ARRAY_FILES, RECORD, FolderLock, RunFolderError,
                                      check_settings, data_identity, read_json, read_npz,
                                      record_changes, save_arrays, sha256_file, write_json)
from npskip.paper.ranking import rank
from npskip.paper.stats import accuracy_record, confusion_matrix, majority_baseline, stratified_split

PAPER = {"cnn1_test_accuracy": 0.98, "cnn2_test_accuracy": 0.62,
         "cnn3_test_accuracy": "close to 1.00", "efficiency": "improved (not measured)"}


def folder_record(config, seed, data):
    """What settings.json holds for one seed folder: settings and the data's identity."""
    settings = {k: v for k, v in config_dict(config).items() if k not in NOT_RECORDED}
    return {"settings": {**settings, "seed": seed},
            "data": data_identity(config.dataset, data[:6])}


class SeedRun:
    """One seed of the pipeline, in ``folder``; stages are methods, results are cached.

    data: what load_data returns. fresh: delete npskip's files in the folder first
    (and nothing else). Raises ConfigError if a setting does not fit the data, and
    RunFolderError if the folder was made with other settings or other data
    (naming each difference), or is in use by another run.
    """

    def __init__(self, folder, config, seed, data, progress=True, log=print, fresh=False):
        self.folder, self.config = Path(folder), config
        self.seed = check_int("seed", seed, 0)
        self.progress, self.log = progress, log
        check_data(config, data)
        self.x_tr, self.y_tr, self.x_val, self.y_val, self.x_te, self.y_te, \
            self.input_shape, self.num_classes = data
        self.results = {}
        self._fingerprints = {}
        self._finished = set()     # the files written by the finished stage being redone
        record = folder_record(config, self.seed, data)
        self.data_sha256 = record["data"]["arrays_sha256"]
        # Held by a stage while it runs, and by the command around all of them.
        self.lock = FolderLock(self.folder)
        with self.lock:
            check_settings(self.folder, record, fresh, log)

    # -- helpers ---------------------------------------------------------
    def fingerprint(self, name):
        """SHA-256 of a file in the folder (remembered while its size and mtime hold)."""
        path = self.folder / name
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        if self._fingerprints.get(name, (None,))[0] != key:
            self._fingerprints[name] = (key, sha256_file(path))
        return self._fingerprints[name][1]

    def record(self, name, inputs=(), settings=()):
        """What stage ``name`` is made from now: {"settings": the settings it depends on
        (STAGE_DEPENDS, plus ``settings``) and the seed, "data_sha256": the data's
        SHA-256, "inputs": {file: SHA-256} of the files it is built from}."""
        return {"settings": stage_settings(self.config, name, self.seed, settings),
                "data_sha256": self.data_sha256,
                "inputs": {f: self.fingerprint(f) for f in inputs}}

    def stage(self, name, fn, inputs=(), outputs=(), settings=()):
        """Run stage ``name`` (fn() -> JSON-able dict) unless it is finished and current.

        inputs: files of the folder the stage is built from (its upstream stages must
        have run); outputs: files it writes besides ``<name>.json`` (names of
        runfolder.ARRAY_FILES); settings: Config fields only this stage depends on
        (the folder's settings.json leaves them out). Finished and current means:
        ``<name>.json`` exists and its ``made_from`` record matches ``record()`` now
        and the SHA-256 of every output. Otherwise the stage is redone: its arrays are
        computed again, a checkpoint whose record does not match is trained afresh
        (fit_resumable checks), and one that matches is resumed, or only evaluated
        again if finished.
        """
        if name in self.results:                 # checked or made earlier in this session
            return self.results[name]
        if not set(outputs) <= set(ARRAY_FILES):  # --fresh deletes only names it knows
            raise ValueError(f"{name}: outputs {list(outputs)} are not all in ARRAY_FILES")
        path = self.folder / f"{name}.json"
        with self.lock:
            made_from = self.record(name, inputs, settings)
            if path.exists():
                old = read_json(path, f"delete it and rerun to redo the {name} stage")
                why = self._stale(path, old, made_from, outputs)
                if why is None:
                    self.results[name] = old
                    self.log(f"[seed {self.seed}] {name}: done before, loaded {path.name}")
                    return old
                self._redo(path, old, why)
            else:
                self._finished = set()
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

    def _redo(self, path, old, why):
        """Say why finished stage ``path`` (its JSON ``old``) is redone, delete it, and
        remember the files it wrote: a damaged checkpoint among them is trained afresh
        (_drop_damaged)."""
        self.log(f"[seed {self.seed}] {path.stem}: redoing ({why})")
        path.unlink()
        self._finished = set(old["made_from"]["outputs"])

    def _stale(self, path, old, now, outputs):
        """Why a finished stage's record does not match the folder now, or None."""
        made = old.get("made_from")
        if not isinstance(made, dict) or not isinstance(made.get("inputs"), dict) \
                or not isinstance(made.get("outputs"), dict):
            raise RunFolderError(f"{path}: no made_from record, so not a finished stage of this "
                                 f"npskip (written by an older version, or not by npskip); "
                                 f"delete it and rerun to redo the stage, or start the folder "
                                 f"afresh with --fresh")
        why = record_changes(made, now)
        if why:
            return "; ".join(why)
        for f in outputs:
            if not (self.folder / f).exists():
                return f"{f} is missing"
            if made["outputs"].get(f) != self.fingerprint(f):
                return f"{f} changed since {path.name} was written"
        return None

    def _drop_damaged(self, path):
        """Delete checkpoint ``path`` if a finished stage wrote it (its record names it)
        and it can no longer be read (truncated, emptied, a byte changed): it is npskip's,
        nothing in it can be resumed, and the stage trains afresh. A checkpoint that no
        finished stage names is left to fit_resumable, which names it if unreadable."""
        if path.name in self._finished and path.exists():
            try:
                checkpoint.load(path)
            except checkpoint.CheckpointError as e:
                self.log(f"[seed {self.seed}] {e}: deleted, trained afresh")
                path.unlink()

    def model(self, name):
        try:
            return checkpoint.load(self.folder / f"{name}.npz")
        except checkpoint.CheckpointError as e:
            raise checkpoint.CheckpointError(f"{e}; delete {name}.npz and {name}.json and rerun "
                                             f"to redo that stage") from None

    def save_arrays(self, name, **arrays):
        """Write the arrays of the running stage to ``name`` (.npz), with its record: the
        settings, seed and data, and the names of the files it was built from (their
        SHA-256 are in the stage's JSON, so that a stage redone on the same inputs writes
        the same bytes, and what is built on them stands)."""
        record = {k: v for k, v in self._made_from.items() if k != "inputs"}
        save_arrays(self.folder / name, made_from={**record,
                                                   "built_from": list(self._made_from["inputs"])},
                    **arrays)

    def arrays(self, name):
        """Every array of ``name`` (.npz in the folder) as a dict, its record left out;
        RunFolderError if broken."""
        path = self.folder / name
        try:
            arrays = read_npz(path)
        except RunFolderError as e:
            raise RunFolderError(f"{e}; delete it and the .json of the same name and rerun to "
                                 f"redo that stage") from None
        return {k: v for k, v in arrays.items() if k != RECORD}

    def new_model(self, classes, network):
        """Fresh weights for CNN ``network`` (1, 2, 3): CNN1 is seeded by the seed
        alone, as ``npskip train`` does; the others by (seed, network)."""
        seed = self.seed if network == 1 else [self.seed, network]
        return SkipCNN(self.input_shape, classes, self.config.widths, seed=seed)

    def train(self, name, model, x, y, routes=None, val=None, **fit_args):
        """Train with a checkpoint per epoch (resumable). Returns (model, history).

        fit_args go to train.fit (e.g. loss=...). The checkpoint carries the stage's
        record: one made by another run, or from other inputs, is trained afresh, and so
        is a finished stage's that was damaged since."""
        self._drop_damaged(self.folder / f"{name}.npz")
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
                    "history": hist, "multiply_adds_per_image": model.multiply_adds()["total"]}
        return self.stage("cnn1", go, outputs=["cnn1.npz"])

    def run_ranking(self):
        self.run_cnn1()

        def go():
            r = rank(self.model("cnn1"), self.x_tr, self.config.maps, self.config.top,
                     progress=self.progress)
            self.save_arrays("ranking.npz", indices=r["indices"], labels=r["labels"],
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
        # Every split has images: the last layer's top images (at least 3, Config.top) all
        # carry its label, and a label with 3 or more puts one in each split.
        split = stratified_split(routes, seed=self.seed)
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
                    "history": hist, "multiply_adds_per_image": model.multiply_adds()["total"]}
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
            self.save_arrays("routes.npz", **out)
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
                    "multiply_add_fraction": float(model.multiply_adds_per_image(r_te).mean()
                                            / model.multiply_adds()["total"]),
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
            full = model.multiply_adds()["total"]
            rng = np.random.default_rng(self.seed)
            anyright = right.any(axis=0)
            oracle = np.where(anyright, right.argmax(axis=0), depth - 1)   # cheapest right route
            routings = {"cnn2": r_cnn2, "random_cnn2_proportions": rng.permutation(r_cnn2),
                        "oracle": oracle}
            routings.update({f"all_route_{r}": np.full(n, r) for r in range(depth)})
            cnn1 = self.run_cnn1()           # loaded: CNN1 is the first control
            out = {"cnn1": {**accuracy_record(int(round(cnn1["test_accuracy"] * n)), n),
                            "multiply_add_fraction": 1.0}}
            for name, routes in routings.items():
                correct = int(np.count_nonzero(right[routes, np.arange(n)]))
                out[name] = {**accuracy_record(correct, n),
                             "multiply_add_fraction": float(model.multiply_adds_per_image(routes).mean() / full),
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
            full = cnn1.multiply_adds()["total"]
            per_image = cnn3.multiply_adds_per_image(r_te)
            with_router = per_image + router.multiply_adds()["total"]
            t_cnn1, t_routed = time_routed_inference(cnn1, router, cnn3, self.x_te,
                                                     self.config.timing_repeats)
            return {
                "route_counts": np.bincount(r_te, minlength=cnn3.depth).tolist(),
                "cnn1_multiply_adds_per_image": full,
                "router_multiply_adds_per_image": router.multiply_adds()["total"],
                "multiply_adds_per_image_without_router": {"mean": per_image.mean(), "std": per_image.std()},
                "multiply_adds_per_image_with_router": {"mean": with_router.mean(), "std": with_router.std()},
                "multiply_add_fraction_without_router": per_image.mean() / full,
                "multiply_add_fraction_with_router": with_router.mean() / full,
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
