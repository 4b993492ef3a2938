"""Looking at a trained run: evaluate, predict, visualize."""
