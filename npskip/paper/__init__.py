"""The paper's pipeline: strongest activations, CNN1, CNN2 and CNN3 as resumable stages."""
