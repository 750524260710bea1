"""Self-distillation: ESD branches and the reliability-decoupled loss."""
from .branches import Branch, DSBlock, ResidualConvBlock, build_branches, build_branches_for
from .esd_loss import DistillConfig, Teacher, build_teacher, distillation_terms, esd_loss

__all__ = ["Branch", "DSBlock", "ResidualConvBlock", "build_branches_for", "DistillConfig", "Teacher", "build_branches", "build_teacher", "distillation_terms", "esd_loss"]
