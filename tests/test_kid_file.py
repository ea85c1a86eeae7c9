"""torch_gpt/kid.py, the whole training in one file, is the real thing: with the same settings it trains
exactly what python -m torch_gpt.train trains, the same losses and the same weights, bit for bit."""
import json

import numpy as np
import torch

from numpy_gpt.config import GPTConfig
from numpy_gpt.machinery.checkpoint import load_weights
from numpy_gpt.machinery.cli import check_training_args
from numpy_gpt.sample import main as numpy_sample
from torch_gpt import kid
from torch_gpt.train import main as train_main
from torch_gpt.train import parser as train_parser


def test_kid_files_settings_are_the_trainers_defaults():
    """Its constants are python -m torch_gpt.train's defaults, so `python -m torch_gpt.kid` trains the
    default run."""
    d = check_training_args(train_parser().parse_args([]))
    assert (kid.SEED, kid.STEPS, kid.BATCH_SIZE, kid.LR, kid.MIN_LR, kid.WARMUP_STEPS) == \
        (d.seed, d.steps, d.batch_size, d.lr, d.min_lr, d.warmup_steps)
    assert (kid.BETAS, kid.WEIGHT_DECAY, kid.GRAD_CLIP, kid.DROPOUT) == ((d.beta1, d.beta2), d.weight_decay,
                                                                       d.grad_clip, d.dropout)
    assert (kid.EVAL_INTERVAL, kid.EVAL_BATCHES, kid.EVAL_TRAIN_BATCHES) == (d.eval_interval, d.eval_batches,
                                                                           d.eval_train_batches)
    assert kid.CONFIG == GPTConfig() and kid.PROMPT == "ROMEO:"


def test_kid_file_trains_what_the_trainer_trains(tmp_path, corpus, monkeypatch, capsys):
    """50 steps on tinyshakespeare, float32, a CPU at one thread, dropout and clipping on: kid.py's and
    torch_gpt.train's losses at every evaluation, and every final weight, are equal, not close. A small
    model keeps it quick; the settings are otherwise the defaults (the test above)."""
    small = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32)
    settings = {"DATA": str(corpus), "OUT": str(tmp_path / "kid"), "DEVICE": "cpu", "STEPS": 50, "BATCH_SIZE": 8,
                "WARMUP_STEPS": 10, "EVAL_INTERVAL": 25, "EVAL_BATCHES": 2, "EVAL_TRAIN_BATCHES": 2,
                "SAMPLE_CHARS": 20, "CONFIG": small}
    for name, value in settings.items():
        monkeypatch.setattr(kid, name, value)
    flags = ["--device", "cpu", "--dtype", "float32", "--bf16", "off", "--data", str(corpus),
             "--out", str(tmp_path / "train"), "--steps", "50", "--batch-size", "8", "--warmup-steps", "10",
             "--eval-interval", "25", "--eval-batches", "2", "--eval-train-batches", "2",
             "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        log = kid.main()
        assert train_main(flags) == 0
    finally:
        torch.set_num_threads(threads)
    trained = [json.loads(line) for line in (tmp_path / "train" / "log.jsonl").read_text().splitlines()]
    assert [(e["step"], e["train_loss"], e["val_loss"]) for e in trained] == log      # equal floats
    assert [step for step, _, _ in log] == [0, 25, 50] and log[-1][2] < log[0][2] - 0.5   # it learned
    ours, config, chars, _ = load_weights(tmp_path / "kid" / "kid.npz")
    theirs, their_config, their_chars, _ = load_weights(tmp_path / "train" / "kid.npz")
    assert (config, chars) == (their_config, their_chars) and list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].dtype == np.float32 and np.array_equal(ours[name], theirs[name]), name
    capsys.readouterr()
    assert numpy_sample(["--checkpoint", str(tmp_path / "kid" / "kid.npz"), "--max-new-tokens", "20"]) == 0
    assert len(capsys.readouterr().out) == 20 + 1            # numpy_gpt samples from it: 20 characters and a newline
