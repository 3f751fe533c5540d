"""Relay kit: relay-side subscribers that apply DistillSync events to shops."""
