"""Quality control: the metrics, the verdict, the export gate, actions and the group table."""
