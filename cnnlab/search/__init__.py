"""Many runs of one config: compare-optimizers and sweeps (Optuna), their plans and reports."""
