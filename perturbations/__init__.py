"""Perturbations applied to a trained model and its dataset at inference (robustness suites)."""
