"""Prefect flows: they only sequence tasks; and `s2d`, the command line above them (`flows/cli.py`)."""
