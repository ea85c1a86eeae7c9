"""The machinery that numpy_gpt's and torch_gpt's commands share, kept apart from the model.

The model is numpy_gpt's reading path (config, data, layers, model, optim, step, sampling). What turns
it into tools lives here:

    errors.py      UserError, the one-line error a user can fix, and open_input
    corpus.py      the training text: tinyshakespeare's download and check, any other UTF-8 file
    cli.py         the command lines: parsers, flags and their checks, the sampling front end
    loop.py        the training loop both trainers run: evaluations, log, snapshots, resume, signals,
                   the progress line
    checkpoint.py  the weights file (.npz), the training state (kid.pt), atomic writes
    threaded.py    numpy_gpt's trainer backend: the step of numpy_gpt.step, one part of the batch a core
    report.py      a run's figures from its log.jsonl
"""
