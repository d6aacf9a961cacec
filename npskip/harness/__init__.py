"""What runs the experiments: settings, data and downloads, checkpoints, run folders."""
