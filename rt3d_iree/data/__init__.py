"""Data sets for training and evaluating the 3D CNNs: real video folders and synthetic clips."""
