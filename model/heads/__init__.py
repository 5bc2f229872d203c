"""Classification heads on frozen sentence embeddings: the quantum and MLP-encoder heads
(``quantum.py``), classical MLP heads (``classical.py``) and scikit-learn baselines
(``baselines.py``). ``registry.py`` is the one list of heads: each head's family
(quantum, torch, sklearn) and the class or function that builds it."""
