"""nettle.models."""
