"""The wire protocol: how AWS clients talk to Keyhive."""
