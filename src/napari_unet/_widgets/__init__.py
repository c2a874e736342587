"""The napari panel of napari-unet (:class:`.panel.UNetPanel`, the one dock widget): sections
for the model and device (``model``), ``segment``, annotate and fine-tune (``finetune``), the
border-weight preview (``weights``) and ``export``, one module each, sharing the current model
through :data:`napari_unet._widgets._session.session` and one progress row (``_progress``).
Importing them does not import torch: the first model load does (in a background thread).
"""
