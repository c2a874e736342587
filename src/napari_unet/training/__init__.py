"""The parts of training (:func:`napari_unet.train.train`), one module each: settings
(``config``), what was painted (``annotations``), prepared images (``examples``), tile drawing
(``sampling``), losses (``losses``, ``distillation``), held-out scoring (``holdout``), the
learning-rate schedule (``schedule``), loss smoothing (``smoothing``), the best-model tracker
(``tracker``) and the model card (``card``). Import from :mod:`napari_unet.train`; this package
imports nothing heavy itself."""
