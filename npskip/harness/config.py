"""Config: every setting a run depends on, checked when it is made.

The paper's settings (data set, epochs, batch size, widths, the ranking's maps
and top images) come first, then the early exits' (npskip.exits). A seed folder
records the settings in settings.json (npskip.harness.runfolder); the settings
that only one stage depends on are recorded by that stage instead
(``STAGE_SETTINGS``), so changing one redoes that stage and what is built on it.
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
        self.top = check_int("top", self.top, 1, self.limit)   # distinct training images
        self.val_fraction = check_fraction("val_fraction", self.val_fraction)
        self.seeds = check_seeds(self.seeds)
        self.timing_repeats = check_int("timing_repeats", self.timing_repeats, 1)

    def _check_exits(self):
        if not isinstance(self.exits, (bool, np.bool_)):
            raise ConfigError("exits", self.exits, "True or False")
        self.exits = bool(self.exits)
        self.exit_epochs = check_int("exit_epochs", self.exit_epochs, 1)
        self.exit_hidden = check_int("exit_hidden", self.exit_hidden, 0)
        self.exit_pool = check_int("exit_pool", self.exit_pool, 1)
        tol = self.operating_tolerance
        if not _is_real(tol) or not 0 <= tol < 1:          # NaN fails both comparisons
            raise ConfigError("operating_tolerance", tol, "a number in [0, 1)")
        self.operating_confidence = check_fraction("operating_confidence",
                                                   self.operating_confidence)


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


def config_dict(config):
    """The config as JSON-able values (widths as a list)."""
    d = asdict(config)
    d["widths"] = list(config.widths)
    return d
