"""Settings: the defaults in config/config.yaml, the schema check and the merge of user files."""
