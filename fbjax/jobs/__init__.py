"""Floor 8: whole jobs behind `launch/` (evaluate, release, the demo, the model card)."""
