"""nettle.measure."""
