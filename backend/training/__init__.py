"""Training the cMDT: windows streamed from a prepared dataset, and the training loop."""
