"""Audit trail: the log export, signed checkpoints and the offline verifier of an export."""
