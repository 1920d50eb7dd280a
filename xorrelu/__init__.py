"""xorrelu: Lab 10-1 ("ReLU: better non-linearity") as an instrument — deep narrow nets on XOR,
many seeds at once, per-step metrics to CSV."""
