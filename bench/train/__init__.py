"""bench/train: hub://auto_trainer as a tracked run vs a plain fit + the same metrics."""
