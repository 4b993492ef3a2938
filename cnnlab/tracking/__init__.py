"""Where a run is shown: TensorBoard logs, MLflow, plots and tables, runs --plot."""
