"""make_plaid_fixture.py runs in the colbert-ai venv (.venv-plaid); colpg's venv cannot import it."""

collect_ignore = ["make_plaid_fixture.py"]
