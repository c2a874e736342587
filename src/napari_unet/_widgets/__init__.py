"""napari dock widgets of napari-unet: one small module per widget.

``model`` (choose the model and device), ``segment``, ``finetune`` (annotate and fine-tune),
``weights`` (border-weight preview) and ``export``. They share the current model through
:data:`napari_unet._widgets._session.session`. Importing them does not import torch: the
first model load does (in a background thread).
"""
