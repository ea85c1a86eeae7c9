"""Shared test helpers: the corpus, small configs, and a centered finite-difference gradient."""
import os

# The test models are tiny: one thread each is fastest, and it keeps this process and the ones the
# tests start (the DDP ranks, the commands) from spinning threads against each other on two cores.
# Set before NumPy and torch load their thread pools.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def corpus_path():
    """tinyshakespeare: $TINY_LLM_CORPUS, else the project's data/ copy, else ../shared/data (CI)."""
    for candidate in (os.environ.get("TINY_LLM_CORPUS"), ROOT / "data" / "tinyshakespeare.txt",
                      ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.fail("tinyshakespeare not found: set TINY_LLM_CORPUS to its path, or put it at data/tinyshakespeare.txt")


@pytest.fixture(scope="session")
def corpus():
    return corpus_path()


@pytest.fixture
def small_text(tmp_path):
    """A short UTF-8 training text: 8 KB of tinyshakespeare."""
    path = tmp_path / "small.txt"
    path.write_text(corpus_path().read_text(encoding="utf-8")[:8000], encoding="utf-8")
    return path


def numeric_grad(f, x, h=1e-5):
    """Centered finite differences of the scalar f() with respect to every element of x (changed in
    place and restored), fourth order: (f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)) / 12h.

    Truncation error O(h^4) times f's fifth derivative, rounding error O(eps |f| / h): about 1e-10
    for h = 1e-5 in float64. The second-order form, (f(x+h) - f(x-h)) / 2h, errs by O(h^2) times the
    third derivative, which is not always small: LayerNorm over a row whose channels nearly agree
    (variance near eps) curves so sharply that it missed a correct gradient by 1e-6 of its scale
    (test_layers.test_layernorm's first example).
    """
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        f_at = []
        for k in (-2, -1, 1, 2):
            flat[i] = old + k * h
            f_at.append(f())
        flat[i] = old
        gflat[i] = (f_at[0] - 8 * f_at[1] + 8 * f_at[2] - f_at[3]) / (12 * h)
    return grad


def assert_grad_close(analytic, numeric, name=""):
    """Finite differences agree with the analytic gradient to 1e-6 of the gradient's own scale.

    The FD error above is ~1e-10 absolute for the O(1) functions tested here; 1e-6 relative to the
    largest entry leaves four orders of margin, while any wrong term (a missing factor, sign or path)
    changes entries by O(1) of that scale.
    """
    assert analytic.shape == numeric.shape, name
    scale = max(np.abs(numeric).max(), 1e-3)
    err = np.abs(analytic - numeric).max() / scale
    assert err < 1e-6, f"{name}: max error {err:.3e} relative to the gradient's scale {scale:.3e}"


@pytest.fixture
def restore_determinism():
    """torch_gpt.train.repeatable_runs turns on PyTorch's deterministic mode for the whole process (the
    trainer does on a GPU and under --compile): a test that calls it in this process undoes it after."""
    import torch
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.utils.deterministic.fill_uninitialized_memory)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.utils.deterministic.fill_uninitialized_memory = before[2]
