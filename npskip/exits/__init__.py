"""Beyond the paper: CNN1 with early exits, and the rule that picks their threshold."""
