"""Distillation: ESD branches and the reliability-decoupled loss; the ANN-teacher terms (SAMD, NLD)."""

from .branches import Branch, DSBlock, ResidualConvBlock, build_branches, build_branches_for
from .esd_loss import DistillConfig, Teacher, build_teacher, distillation_terms, esd_loss
from .kd import KDConfig

__all__ = [
    "Branch",
    "DSBlock",
    "DistillConfig",
    "KDConfig",
    "ResidualConvBlock",
    "Teacher",
    "build_branches",
    "build_branches_for",
    "build_teacher",
    "distillation_terms",
    "esd_loss",
]
