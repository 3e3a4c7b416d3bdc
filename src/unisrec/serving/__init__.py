"""Recommend from a model directory: Python API, new items by text, FAISS option, HTTP app.

``from unisrec.serving import Recommender`` -- imported lazily so that loading the CLI (which
imports ``unisrec.serving.cli``) does not pull in torch.
"""

__all__ = ["Recommender", "UnknownItemsError", "create_app"]


def __getattr__(name: str):
    if name in ("Recommender", "UnknownItemsError"):
        from unisrec.serving import recommender

        return getattr(recommender, name)
    if name == "create_app":
        from unisrec.serving.app import create_app

        return create_app
    raise AttributeError(f"module 'unisrec.serving' has no attribute {name!r}")
