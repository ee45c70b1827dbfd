"""Model-level acceleration: distillation, pruning, quantization, under an accuracy guard."""
