"""nettle.compress."""
