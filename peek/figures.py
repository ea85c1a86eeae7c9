"""python -m peek show --figures DIR: the figures, drawn with matplotlib from peek.export's data.

    embedding.png     wte on its two main axes, each point its character
    positions.png     the cosine similarity of every pair of position vectors (wpe)
    attention.png     every layer and head's attention over the prompt
    predictions.png   the next-character probabilities at the prompt's last positions
    loss.png          train and val loss against step, when the run's log.jsonl is known
"""
from pathlib import Path

import numpy as np

from numpy_gpt.machinery.checkpoint import atomic_write
from numpy_gpt.machinery.loop import plot_losses
from numpy_gpt.machinery.errors import UserError

from .analysis import show_char


def pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--figures needs matplotlib: pip install -e '.[plot]' (or pip install matplotlib)") from None
    return plt


def write_figures(data, folder):
    """Draw every figure the data allows into folder -> the paths written."""
    plt = pyplot()
    folder = Path(folder)
    chars, view = data["vocab"]["chars"], data["prompt"]
    figures = {"embedding.png": embedding(plt, data, chars), "positions.png": positions(plt, data),
               "attention.png": attention(plt, view), "predictions.png": predictions(plt, view, chars)}
    written = []
    for name, fig in figures.items():
        atomic_write(folder / name, lambda f: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)
        written.append(folder / name)
    if data["log"]:
        plot_losses(data["log"], folder / "loss.png")         # the trainer's own loss.png
        written.append(folder / "loss.png")
    return written


def embedding(plt, d, chars):
    xy = np.array(d["embedding"]["pca"])                                 # (V, 2)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.scatter(xy[:, 0], xy[:, 1], s=0)
    for (x, y), c in zip(xy, chars):
        kind = "tab:blue" if c.isupper() else "tab:orange" if c.islower() else "tab:green"
        ax.annotate(show_char(c), (x, y), ha="center", va="center", fontsize=13, color=kind, family="DejaVu Sans")
    pad = 0.08 * (np.ptp(xy, axis=0) + 1e-9)
    ax.set_xlim(xy[:, 0].min() - pad[0], xy[:, 0].max() + pad[0])
    ax.set_ylim(xy[:, 1].min() - pad[1], xy[:, 1].max() + pad[1])
    e = d["embedding"]["explained"]
    ax.set_xlabel(f"first principal axis ({e[0]:.0%} of the variance)")
    ax.set_ylabel(f"second principal axis ({e[1]:.0%})")
    ax.set_title("The character embeddings (wte) on their two main axes\nupper case blue, lower case orange, the rest green", fontsize=11)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    return fig


def positions(plt, d):
    sim = np.array(d["positions"]["similarity"])                         # (P, P)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xlabel("position")
    ax.set_ylabel("position")
    ax.set_title("Cosine similarity of the position vectors (wpe)")
    fig.colorbar(im, ax=ax, shrink=0.85)
    fig.tight_layout()
    return fig


def attention(plt, view):
    att = np.array(view["attention"])                                    # (L, H, T, T)
    L, H, T, _ = att.shape
    labels = [show_char(c) for c in view["text"]]
    size = min(3.2, max(2.2, 0.12 * T))
    fig, axes = plt.subplots(L, H, figsize=(size * H + 0.6, size * L + 0.6), squeeze=False)
    ticks = range(T) if T <= 40 else range(0, T, max(1, T // 20))
    for l in range(L):
        for h in range(H):
            ax = axes[l, h]
            ax.imshow(att[l, h], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks(list(ticks), [labels[t] for t in ticks], fontsize=8)
            ax.set_yticks(list(ticks), [labels[t] for t in ticks], fontsize=8)
            ax.set_title(f"layer {l}, head {h}", fontsize=9)
    fig.suptitle(f"Attention over {view['text'][:40]!r}{'...' if T > 40 else ''}: row = query, column = key")
    fig.tight_layout()
    return fig


def predictions(plt, view, chars, positions_shown=4, bars=10):
    T = len(view["ids"])
    shown = list(range(max(0, T - positions_shown), T))
    fig, axes = plt.subplots(1, len(shown), figsize=(3.3 * len(shown) + 0.5, 3.6), squeeze=False)
    for ax, t in zip(axes[0], shown):
        probs = np.array(view["probs"][t])
        top = np.argsort(-probs, kind="stable")[:bars]
        ax.bar(range(len(top)), probs[top], color="tab:blue")
        ax.set_xticks(range(len(top)), [show_char(chars[j]) for j in top])
        ax.set_ylim(0, 1)
        context = "".join(show_char(c) for c in view["text"][max(0, t - 9):t + 1])
        ax.set_title(f"after {context!r}", fontsize=10)
    axes[0][0].set_ylabel("probability of the next character")
    fig.tight_layout()
    return fig
