"""The run folder on disk: its files, lock, resume state, export staging, a trained run and its held-out images, listing."""
