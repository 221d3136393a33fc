"""robustrec: train multimodal recommenders with robust strategies and audit their robustness."""

__version__ = "0.1.0"
