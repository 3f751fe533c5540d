"""What the agent and the relay kit share. They stand apart (the relay kit is written from
the contract alone, tests/test_layering.py), so a fix that both need lives here, below
both: this package imports neither of them and no outside dependency."""
