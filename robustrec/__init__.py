"""robustrec: train multimodal recommenders with robust strategies and audit their robustness.

The public API, one import away::

    from robustrec import open_dataset, RunSpec, TrainConfig, train, open_run, Evaluator

Perturbation suites and audits live in :mod:`perturbations`, captioners in :mod:`captioning`,
tables, plots and the CI gate in :mod:`reports`. The API behaves as the ``robustrec`` command does:
training and evaluation run torch on one thread unless told otherwise (``TrainConfig(threads=N)``,
``Evaluator(..., threads=N)`` or ``$ROBUSTREC_THREADS``; see :mod:`robustrec.numerics`).
"""

__version__ = "0.1.0"

from robustrec.numerics import request_reproducible_libraries as _request_reproducible_libraries

# Before torch's math libraries first run: the same numbers whatever the thread count (numerics.py).
_request_reproducible_libraries()

# Re-exported lazily (PEP 562) so that light users (reports, the CI gate) do not import torch.
_EXPORTS = {
    "robustrec.data": ("Dataset", "ItemFeatures", "ItemInfo", "load_dataset", "open_dataset"),
    "robustrec.errors": ("ConfigError", "DataError", "RobustRecError"),
    "robustrec.evaluate": ("EvalResult", "Evaluator"),
    "robustrec.models": ("MODELS", "Recommender", "build_model"),
    "robustrec.records": ("Record", "load_records", "read_records", "write_records"),
    "robustrec.runs": ("Run", "RunSpec", "TrainConfig", "open_run"),
    "robustrec.strategies": ("STRATEGIES", "Strategy", "build_strategy"),
    "robustrec.training": ("TrainResult", "train"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'robustrec' has no attribute {name!r}")


__all__ = [
    "MODELS",
    "STRATEGIES",
    "ConfigError",
    "DataError",
    "Dataset",
    "EvalResult",
    "Evaluator",
    "ItemFeatures",
    "ItemInfo",
    "Record",
    "Recommender",
    "RobustRecError",
    "Run",
    "RunSpec",
    "Strategy",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "build_model",
    "build_strategy",
    "load_dataset",
    "load_records",
    "open_dataset",
    "open_run",
    "read_records",
    "train",
    "write_records",
]
