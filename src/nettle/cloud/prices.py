"""The cheapest recent AWS spot price per instance type across regions, and per GPU.

For each region (`describe_regions` when none are given) the spot price history of the last
`hours` hours for Linux/UNIX (`describe_spot_price_history`, every page) gives each
availability zone's latest price; the cheapest zone over all regions is the instance type's
offer. The GPU count comes from `describe_instance_types` (GpuInfo), or from `GPU_COUNTS`, a
small table from AWS's instance-type pages, where that call is not allowed.

Example:
    >>> report = spot_prices(["g5.xlarge", "p3.2xlarge"], regions=["us-east-1"])  # doctest: +SKIP
    >>> report.offers[0].price_per_gpu  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["GPU_COUNTS", "CloudError", "PriceReport", "SpotOffer", "spot_prices"]

# GPUs per instance type (AWS EC2 accelerated-computing instance pages), used only when
# describe_instance_types is not permitted.
GPU_COUNTS = {
    "p3.2xlarge": 1,
    "p3.8xlarge": 4,
    "p3.16xlarge": 8,
    "p3dn.24xlarge": 8,
    "p4d.24xlarge": 8,
    "p5.48xlarge": 8,
    "g4dn.xlarge": 1,
    "g4dn.12xlarge": 4,
    "g5.xlarge": 1,
    "g5.12xlarge": 4,
    "g5.48xlarge": 8,
    "g6.xlarge": 1,
    "g6.12xlarge": 4,
}
_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
_DEFAULT_REGION = "us-east-1"
ClientFactory = Callable[[str], Any]


class CloudError(RuntimeError):
    """A request that cannot be answered: unknown instance types, no credentials, no boto3."""


@dataclass
class SpotOffer:
    """The cheapest latest spot price of one instance type (None fields: no offer seen)."""

    instance_type: str
    gpus: int | None
    price: float | None = None
    price_per_gpu: float | None = None
    region: str | None = None
    zone: str | None = None
    timestamp: str | None = None
    zones_seen: int = 0


@dataclass
class PriceReport:
    """Offers in the order asked, the regions searched and the window."""

    offers: list[SpotOffer]
    regions: list[str]
    hours: float
    start: str
    gpu_source: str = "describe_instance_types"
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for `--json`."""
        return asdict(self)


def _botocore() -> Any:
    try:
        import boto3  # noqa: F401
        import botocore.exceptions
    except ImportError:
        raise CloudError("cloud prices need boto3: pip install 'nettle[cloud]'") from None
    return botocore.exceptions


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def default_client_factory(region: str) -> Any:
    """A real EC2 client of `region` from the default boto3 credential chain."""
    import boto3

    return boto3.session.Session().client("ec2", region_name=region)


def _gpu_counts(client: Any, types: list[str], errors: Any) -> tuple[dict[str, int], str]:
    try:
        counts: dict[str, int] = {}
        pages = client.get_paginator("describe_instance_types").paginate(InstanceTypes=types)
        for page in pages:
            for info in page["InstanceTypes"]:
                gpus = (info.get("GpuInfo") or {}).get("Gpus") or []
                counts[info["InstanceType"]] = sum(g.get("Count", 0) for g in gpus)
        return counts, "describe_instance_types"
    except errors.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "InvalidInstanceType":
            message = exc.response["Error"].get("Message", "")
            bad = [t for t in types if t in message] or types
            raise CloudError(f"unknown instance type(s): {', '.join(bad)} ({message})") from None
        if code not in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
            raise
        return {t: GPU_COUNTS[t] for t in types if t in GPU_COUNTS}, "table"


def _latest_by_zone(
    client: Any, types: list[str], start: dt.datetime
) -> dict[tuple[str, str], dict[str, Any]]:
    """(instance type, zone) -> its latest price record in the window."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    pages = client.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=types, ProductDescriptions=["Linux/UNIX"], StartTime=start
    )
    for page in pages:
        for rec in page["SpotPriceHistory"]:
            key = (rec["InstanceType"], rec["AvailabilityZone"])
            if key not in latest or rec["Timestamp"] > latest[key]["Timestamp"]:
                latest[key] = rec
    return latest


def spot_prices(
    instance_types: Sequence[str],
    regions: Sequence[str] | None = None,
    hours: float = 24.0,
    *,
    client_factory: ClientFactory | None = None,
    now: dt.datetime | None = None,
) -> PriceReport:
    """The cheapest latest Linux/UNIX spot price of each instance type, and per GPU.

    Args:
        instance_types: e.g. ["p3.2xlarge", "g5.xlarge"].
        regions: regions to search (default: every region `describe_regions` lists).
        hours: how far back the price history goes.
        client_factory: `region -> EC2 client` (default: boto3's credential chain).
        now: the end of the window (default: the current UTC time).

    Raises:
        CloudError: boto3 missing, no credentials, a malformed or unknown instance type.
    """
    errors = _botocore()
    types = list(dict.fromkeys(t.strip() for t in instance_types if t.strip()))
    bad = [t for t in types if not _TYPE.match(t)]
    if not types or bad:
        raise CloudError(f"instance types look like p3.2xlarge, got {bad or 'none'}")
    if hours <= 0:
        raise ValueError(f"hours must be > 0, got {hours}")
    factory = client_factory or default_client_factory
    start = (now or _now()) - dt.timedelta(hours=hours)
    try:
        home_region = regions[0] if regions else _DEFAULT_REGION
        home = factory(home_region)
        if not regions:
            regions = sorted(r["RegionName"] for r in home.describe_regions()["Regions"])
        gpus, source = _gpu_counts(home, types, errors)
        report = PriceReport([], list(regions), hours, start.isoformat(), source)
        latest: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        for region in regions:
            client = home if region == home_region else factory(region)
            try:
                found = _latest_by_zone(client, types, start)
            except errors.ClientError as exc:  # e.g. a region not enabled for the account
                report.errors[region] = str(exc)
                continue
            latest |= {key: (region, rec) for key, rec in found.items()}
    except errors.NoCredentialsError:
        raise CloudError(
            "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        ) from None
    for t in types:
        offer = SpotOffer(t, gpus.get(t))
        zones = [
            (float(rec["SpotPrice"]), reg, rec) for (it, _), (reg, rec) in latest.items() if it == t
        ]
        offer.zones_seen = len(zones)
        if zones:
            price, region, rec = min(zones, key=lambda z: (z[0], z[1], z[2]["AvailabilityZone"]))
            offer.price, offer.region, offer.zone = price, region, rec["AvailabilityZone"]
            offer.timestamp = rec["Timestamp"].isoformat()
            offer.price_per_gpu = price / offer.gpus if offer.gpus else None
        report.offers.append(offer)
    return report
