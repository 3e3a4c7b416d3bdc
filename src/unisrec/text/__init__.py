"""Item-text features (Eq. 1): encode item texts with a frozen pre-trained language model.

``TextEncoder`` turns texts into vectors; ``encode_dataset`` writes a dataset directory's feature
set (plus its word-drop copy) and records it in the manifest. Importing this package does not
import torch; the model is loaded when a ``TextEncoder`` is built.
"""

from unisrec.text.encoder import DEFAULT_ENCODER, TextEncoder, cls_pooling, mean_pooling
from unisrec.text.features import encode_dataset, import_features
from unisrec.text.word_drop import word_drop

__all__ = ["DEFAULT_ENCODER", "TextEncoder", "encode_dataset", "import_features", "word_drop", "cls_pooling",
           "mean_pooling"]
