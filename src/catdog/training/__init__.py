"""Training: ``catdog train``, in one process or many (torchrun, DDP). One module per concern:

- :mod:`~catdog.training.recipe`: :func:`train`, the whole recipe read top to bottom, and its steps;
- :mod:`~catdog.training.config`: :class:`TrainConfig` and the defaults of each kind of run;
- :mod:`~catdog.training.batches`: what the step eats (pixel cache or cached features, resumable order);
- :mod:`~catdog.training.loop`: one epoch, validation, the record of an epoch;
- :mod:`~catdog.training.schedule`: optimizer, learning-rate schedule, time budget;
- :mod:`~catdog.training.precision`: bf16/fp16/fp32 and AMX detection;
- :mod:`~catdog.training.calibration`: temperature and the open-set (`neither`) gate;
- :mod:`~catdog.training.checkpoint`: :class:`RunState`, checkpoints and ``--resume``;
- :mod:`~catdog.training.distributed`: the process group and the budget shared by all ranks;
- :mod:`~catdog.training.progress`: progress, curves, versions.

Importing the package imports none of them (torch loads with the module that needs it).
"""
