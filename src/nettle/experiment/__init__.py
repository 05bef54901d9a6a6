"""nettle.experiment."""
