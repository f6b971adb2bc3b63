"""The person's own space: MNI to T1w transforms and the scalp entry point and coil orientation."""
