"""Config: every setting a run depends on, checked when it is made.

The paper's settings (data set, epochs, batch size, widths, the ranking's maps
and top images) come first, then the early exits' (npskip.exits). A seed folder
records the settings in settings.json (npskip.harness.runfolder); the settings
that only one stage depends on are recorded by that stage instead
(``STAGE_SETTINGS``), so changing one redoes that stage and what is built on it.
Every stage file records the settings it depends on (``STAGE_DEPENDS``).

Config checks what it can know from the settings alone (including the sizes the
data set's images and the statistics need); ``check_data`` checks the rest once
the data is read, before the first stage runs.
"""

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from npskip.engine.checks import ConfigError, check_int, is_int
from npskip.harness.data import DATASETS


@dataclass
class Config:
    """Everything a run depends on; a bad field raises ConfigError naming it."""
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
    # Beyond the paper (npskip.exits): exit heads on the trained CNN1, then the threshold
    # chosen on validation. exits=False stops after the paper's stages.
    exits: bool = True
    exit_epochs: int = 10            # epochs of the exit heads' training (CNN1 frozen)
    exit_hidden: int = 64            # hidden units of each exit head (0: one dense layer)
    exit_pool: int = 2               # each exit head averages its maps over pool x pool blocks
    # The operating point (npskip.exits.selection): the loss bound plus test noise must
    # stay within this tolerance, at this one-sided confidence.
    operating_tolerance: float = 0.002
    operating_confidence: float = 0.95

    def __post_init__(self):
        self._check_paper()
        self._check_exits()

    def _check_paper(self):
        if self.dataset not in DATASETS:
            raise ConfigError("dataset", self.dataset, f"one of {sorted(DATASETS)}")
        if not isinstance(self.exits, (bool, np.bool_)):   # first: the smallest limit needs it
            raise ConfigError("exits", self.exits, "True or False")
        self.exits = bool(self.exits)
        self.epochs = check_int("epochs", self.epochs, 1)
        self.batch_size = check_int("batch_size", self.batch_size, 1)
        self.widths = check_widths("widths", self.widths, 2)
        self.maps = check_int("maps", self.maps, 1)
        if min(self.widths) < self.maps:        # ranking reads the first `maps` of every layer
            raise ConfigError("widths", self.widths, f"at least {self.maps} maps in every layer, "
                              f"as the ranking reads the first {self.maps} of each (maps, "
                              f"--maps)")
        if self.limit is not None:
            self.limit = check_limit(self.limit, self.exits)
        self.top = check_top(self.top, self.limit)
        self.val_fraction = check_fraction("val_fraction", self.val_fraction)
        self.seeds = check_seeds(self.seeds)
        self.timing_repeats = check_int("timing_repeats", self.timing_repeats, 1)

    def _check_exits(self):
        self.exit_epochs = check_int("exit_epochs", self.exit_epochs, 1)
        self.exit_hidden = check_int("exit_hidden", self.exit_hidden, 0)
        h, w, _ = DATASETS[self.dataset]["shape"]
        self.exit_pool = check_pool(self.exit_pool, h, w, self.dataset)
        tol = self.operating_tolerance
        if not _is_real(tol) or not 0 <= tol < 1:          # NaN fails both comparisons
            raise ConfigError("operating_tolerance", tol, "a number in [0, 1)")
        self.operating_confidence = check_fraction("operating_confidence",
                                                   self.operating_confidence)


def check_limit(limit, exits):
    """--limit N keeps N training images and N/5 validation and test images: at least 3
    (the ranking's top images), at least 10 with the exits (2 of each for their statistics)."""
    if is_int(limit) and limit >= (10 if exits else 3):
        return int(limit)
    raise ConfigError("limit", limit, "an integer >= 10 with the early exits: they are judged "
                      "on the limit/5 validation and test images, at least 2 of each (without "
                      "the exits, exits=False or --no-exits, 3 is enough)" if exits else
                      "an integer >= 3 (npskip's smallest subset: the ranking takes 3 images per "
                      "map or more)")


def check_top(top, limit):
    """The ranking's top images per map: distinct training images (at most ``limit``), and
    at least 3, which guarantees a layer label with an image for each of the labelled
    images' training, validation and test splits (stats.stratified_split)."""
    if is_int(top) and 3 <= top and (limit is None or top <= limit):
        return int(top)
    raise ConfigError("top", top, (f"an integer in 3..{limit}" if limit else "an integer >= 3")
                      + " (distinct training images per map; 3 or more give the labelled images "
                        "a label with one for training, validation and test)")


def check_pool(pool, h, w, of):
    """An exit head's pooling: a block size that divides the h x w maps of ``of``."""
    if is_int(pool) and pool >= 1 and h % pool == 0 and w % pool == 0:
        return int(pool)
    sizes = [d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]
    raise ConfigError("exit_pool", pool, f"an integer that divides the {h}x{w} maps of {of}: "
                      + ", ".join(map(str, sizes)))


def check_data(config, data):
    """What Config cannot know before the data is read, checked before any stage runs.

    data: what pipeline.load_data returns. Raises ConfigError naming the setting.
    """
    _, y_tr, _, y_val, _, y_te, (h, w, _), _ = data
    if config.top > len(y_tr):
        raise ConfigError("top", config.top, f"at most the {len(y_tr)} training images")
    least = 2 if config.exits else 1
    if len(y_val) < least:
        raise ConfigError("val_fraction", config.val_fraction,
                          f"a fraction that leaves at least {least} validation image(s) "
                          f"(it leaves {len(y_val)})")
    if len(y_te) < least:
        raise ConfigError("dataset", config.dataset, f"a data set with at least {least} test "
                          f"image(s) (this one has {len(y_te)})")
    if config.exits:
        check_pool(config.exit_pool, h, w, "these images")


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


def check_seeds(value):
    """One or more distinct ints >= 0 (a single int is one seed)."""
    try:
        seeds = list(value)
    except TypeError:
        seeds = [value]
    seeds = [check_int("seeds", s, 0) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", value, "one or more distinct integers >= 0")
    return seeds


# The settings one stage alone depends on: the folder's settings.json leaves them out
# and that stage records them, so changing one redoes just that stage and what follows.
STAGE_SETTINGS = {
    "exits": ("exit_epochs", "exit_hidden", "exit_pool"),
    "exit_curve": ("operating_tolerance", "operating_confidence"),
}
# Which seeds run and whether the exits run are not a folder's settings either.
NOT_RECORDED = ("seeds", "exits") + sum(STAGE_SETTINGS.values(), ())
# The settings each stage's files depend on, besides the seed and the data, which every
# record holds: a file whose record shows other values is redone, whichever run wrote it.
DATA = ("dataset", "limit", "val_fraction")
TRAINING = DATA + ("epochs", "batch_size", "widths")
STAGE_DEPENDS = {
    "cnn1": TRAINING, "ranking": DATA + ("maps", "top"), "cnn2": TRAINING,
    "cnn3_paper": TRAINING, "routes": DATA, "cnn3_deploy": TRAINING, "controls": DATA,
    "efficiency": DATA + ("timing_repeats",),
    "exits": DATA + ("batch_size",) + STAGE_SETTINGS["exits"],
    "exit_curve": DATA + ("timing_repeats", "exit_hidden", "exit_pool")
    + STAGE_SETTINGS["exit_curve"],
}


def stage_settings(config, stage, seed, extra=()):
    """The settings a stage file's record holds: those the stage depends on
    (STAGE_DEPENDS; DATA for a stage not listed), ``extra`` ones, and the seed."""
    cfg = config_dict(config)
    keys = dict.fromkeys(STAGE_DEPENDS.get(stage, DATA) + tuple(extra))
    return {**{k: cfg[k] for k in keys}, "seed": seed}


def config_dict(config):
    """The config as JSON-able values (widths as a list)."""
    d = asdict(config)
    d["widths"] = list(config.widths)
    return d
