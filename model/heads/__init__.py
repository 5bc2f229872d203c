"""Classification heads on frozen sentence embeddings: quantum, classical (MLP) and scikit-learn baselines."""
