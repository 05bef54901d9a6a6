"""nettle.attack."""
