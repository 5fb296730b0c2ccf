"""Per-deploy verdicts: pure judgement (judgement.py) and deploy registration (deploys.py)."""
