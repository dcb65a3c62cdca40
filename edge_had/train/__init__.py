"""Training code of the enhancement method (kept apart from the pure models in ``edge_had.models``).

* :mod:`edge_had.train.config` - :class:`TrainConfig`, what defines a run (torch-free);
* :mod:`edge_had.train.losses` - every loss of both stages, pure functions with pixel masks;
* :mod:`edge_had.train.data` - scenes prepared in K canonical bands, the tile sampler;
* :mod:`edge_had.train.modules` - training-only networks (bottleneck, decoder, restoration net);
* :mod:`edge_had.train.loops` - encoder pretraining, stage 1 (reverse distillation), stage 2;
* :mod:`edge_had.train.runner` - :func:`train`: seeds, checkpoints, resume, DDP, the bundle;
* :mod:`edge_had.train.release` - the shipped model with its sidecar and model card;
* :mod:`edge_had.train.cli` - the ``edge-had train`` options.

Nothing is imported here, so ``import edge_had.train.config`` (the CLI's options) needs no torch.
"""
