"""Settings: the defaults in config/config.yaml, the schema check and the merge of user files (``settings``);
what made an output folder: its saved settings and the commands run in it (``record``)."""
