"""nettle.inspect."""
