"""Draw docs/exit-curve-mnist.png: the early exits' accuracy against multiply-adds.

    python docs/make_exit_figure.py

The numbers are typed in, not recomputed: they are the sweep of MNIST seed 0 at the
paper's settings, as notebook 7 (then 07-a-router-that-pays.ipynb) printed it from that
seed's run folder in its committed outputs at commit ea1500b, executed with the full
settings; docs/results.md tabulates them under "The early exits' curve, MNIST seed 0". Test set, 10,000 images; multiply-adds as a
fraction of CNN1's, the heads included.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# threshold t, test accuracy (%), random exits in the same mix (%), multiply-adds / CNN1's
CURVE = [
    (0.0, 98.05, 98.05, 0.057),
    (0.5, 98.13, 98.05, 0.058),
    (0.8, 98.56, 98.06, 0.074),
    (0.9, 98.59, 98.07, 0.086),
    (0.95, 98.71, 98.08, 0.100),
    (0.98, 98.76, 98.08, 0.122),
    (0.99, 98.85, 98.12, 0.146),
    (0.995, 98.83, 98.16, 0.176),
    (0.998, 98.80, 98.22, 0.226),
    (0.999, 98.80, 98.23, 0.269),
    (0.9995, 98.81, 98.26, 0.315),
    (0.9998, 98.78, 98.35, 0.379),
    (0.9999, 98.79, 98.33, 0.429),
    (1.0, 98.78, 98.78, 1.000),
]
CNN1 = 98.78            # CNN1's test accuracy, the same run
CHOSEN = 0.95           # the threshold the rule chose on validation alone
TARGET = (0.2, 0.4)     # within 0.2 points of CNN1, at most 0.4 of its multiply-adds


def main(out=Path(__file__).resolve().parent / "exit-curve-mnist.png"):
    t, acc, rand, madds = zip(*CURVE)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    ax.fill_between([0.04, TARGET[1]], CNN1 - TARGET[0], 99.0, color="tab:green", alpha=0.08,
                    label="target: within 0.2 points at <= 0.4 of the multiply-adds")
    ax.axhline(CNN1, color="grey", lw=1, ls="--", label=f"CNN1 ({CNN1:.2f}%)")
    ax.plot(madds, acc, "o-", color="tab:blue", label="early exits, one point per threshold t")
    ax.plot(madds, rand, "x:", color="tab:orange", label="random exits in the same mix")
    i = t.index(CHOSEN)
    ax.plot(madds[i], acc[i], "o", ms=12, mfc="none", mec="black", mew=1.5,
            label=f"the rule's choice, t = {CHOSEN} (chosen on validation)")
    for k in (0, i, t.index(0.999), len(t) - 1):
        ax.annotate(f"t = {t[k]:g}", (madds[k], acc[k]), textcoords="offset points",
                    xytext=(4, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xticks([0.05, 0.1, 0.2, 0.4, 1.0], ["0.05", "0.1", "0.2", "0.4", "1"])
    ax.set_ylim(97.9, 99.0)
    ax.set_xlabel("multiply-adds per image, fraction of CNN1's (heads included; log scale)")
    ax.set_ylabel("test accuracy (%), 10,000 images")
    ax.set_title("Early exits on MNIST, seed 0, the paper's settings")
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(out, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
