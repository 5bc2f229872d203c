"""Classification heads on frozen sentence embeddings: the quantum and MLP-encoder heads
(``quantum.py``), classical MLP heads (``classical.py``) and scikit-learn baselines
(``baselines.py``)."""
