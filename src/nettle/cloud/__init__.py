"""Cloud helpers: spot prices per GPU across AWS regions (`nettle cloud prices`)."""

from nettle.cloud.prices import PriceReport, SpotOffer, spot_prices

__all__ = ["PriceReport", "SpotOffer", "spot_prices"]
