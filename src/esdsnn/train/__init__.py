"""Training: ``train(config)`` runs one run (:mod:`.loop`) as one session of epochs and steps
(:mod:`.session`), with the optimiser (:mod:`.optim`), the checkpointed state (:mod:`.state`),
interrupts (:mod:`.interrupts`), data parallelism (:mod:`.distributed`) and progress
(:mod:`.logging`)."""

from .loop import RunResult, resume_config, train

__all__ = ["RunResult", "resume_config", "train"]
