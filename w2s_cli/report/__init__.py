"""What `w2s report` shows: tables and JSON of records (render.py), figures and CSV (plots.py), MLflow logging
(tracking.py)."""
