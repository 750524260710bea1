"""esdsnn."""
