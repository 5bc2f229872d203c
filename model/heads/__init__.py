"""Classification heads on frozen sentence embeddings: quantum (``quantum.py``), MLP and
MLP-encoder heads (``classical.py``), scikit-learn baselines (``baselines.py``)."""
