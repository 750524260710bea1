"""Self-distillation: ESD branches and the reliability-decoupled loss."""
from .branches import Branch, DSBlock, build_branches
from .esd_loss import DistillConfig, Teacher, build_teacher, distillation_terms, esd_loss

__all__ = ["Branch", "DSBlock", "DistillConfig", "Teacher", "build_branches", "build_teacher", "distillation_terms", "esd_loss"]
