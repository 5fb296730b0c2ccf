"""Detection: pure decisions (decisions.py) beside the SQL that feeds them (queries.py)."""
