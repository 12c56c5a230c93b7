"""dlpipe drift: live inputs and predictions against the training data."""
