"""Database backend for the embedded PostgreSQL under the data folder (see base.py)."""
