"""napari-brain-concepts: shared decodable concepts and language-model alignment for fMRI.

Importing the package is cheap: torch, transformers and napari are imported lazily by the modules
that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
