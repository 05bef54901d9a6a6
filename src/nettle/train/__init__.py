"""nettle.train."""
