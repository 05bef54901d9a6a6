"""Spot prices on real botocore clients answered by Stubber: no request leaves the machine."""

import argparse
import datetime as dt
import json
import sys

import pytest

from nettle.cloud.prices import CloudError, spot_prices

boto3 = pytest.importorskip("boto3")
from botocore.stub import Stubber  # noqa: E402

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
START = NOW - dt.timedelta(hours=6)
TYPES = ["p3.8xlarge", "g5.xlarge", "g4dn.xlarge"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Dummy credentials, no metadata service, and an endpoint nothing listens on."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _rec(itype, zone, price, hours_ago):
    return {
        "InstanceType": itype,
        "AvailabilityZone": zone,
        "ProductDescription": "Linux/UNIX",
        "SpotPrice": f"{price:.6f}",
        "Timestamp": NOW - dt.timedelta(hours=hours_ago),
    }


def _history_params(token=None):
    params = {"InstanceTypes": TYPES, "ProductDescriptions": ["Linux/UNIX"], "StartTime": START}
    return params | ({"NextToken": token} if token else {})


def _itype(name, gpus):
    info = {"InstanceType": name}
    if gpus:
        info["GpuInfo"] = {"Gpus": [{"Name": "GPU", "Manufacturer": "NVIDIA", "Count": gpus}]}
    return info


@pytest.fixture
def clients():
    """us-east-1: regions, GPU counts, two pages of history; eu-west-1: one page."""
    made = {
        r: boto3.session.Session().client("ec2", region_name=r) for r in ("us-east-1", "eu-west-1")
    }
    east, west = Stubber(made["us-east-1"]), Stubber(made["eu-west-1"])
    regions = [{"RegionName": "us-east-1"}, {"RegionName": "eu-west-1"}]
    east.add_response("describe_regions", {"Regions": regions}, {})
    east.add_response(
        "describe_instance_types",
        {
            "InstanceTypes": [
                _itype("p3.8xlarge", 4),
                _itype("g5.xlarge", 1),
                _itype("g4dn.xlarge", 1),
            ]
        },
        {"InstanceTypes": TYPES},
    )
    west.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                _rec("p3.8xlarge", "eu-west-1a", 3.90, 2),
                _rec("p3.8xlarge", "eu-west-1a", 3.70, 1),  # latest in 1a
                _rec("p3.8xlarge", "eu-west-1b", 3.50, 3),
                _rec("g5.xlarge", "eu-west-1a", 0.50, 1),
            ]
        },
        _history_params(),
    )
    east.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                _rec("p3.8xlarge", "us-east-1a", 3.80, 1),
                _rec("p3.8xlarge", "us-east-1b", 3.10, 5),  # cheaper, but no longer the price
                _rec("p3.8xlarge", "us-east-1b", 3.60, 1),
            ],
            "NextToken": "page2",
        },
        _history_params(),
    )
    east.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                _rec("g5.xlarge", "us-east-1c", 0.42, 2),
                _rec("g5.xlarge", "us-east-1d", 0.45, 1),
            ],
            "NextToken": "",
        },
        _history_params("page2"),
    )
    east.activate()
    west.activate()
    yield made
    east.assert_no_pending_responses()
    west.assert_no_pending_responses()


def test_cheapest_latest_zone_price_per_gpu_across_regions(clients):
    report = spot_prices(TYPES, hours=6, client_factory=clients.__getitem__, now=NOW)
    assert report.regions == ["eu-west-1", "us-east-1"] and report.start == START.isoformat()
    p3, g5, g4 = report.offers
    # p3.8xlarge latest per zone: 1a 3.70, 1b 3.50, us-1a 3.80, us-1b 3.60 -> 3.50 / 4 GPUs
    assert (p3.price, p3.region, p3.zone, p3.gpus, p3.zones_seen) == (
        3.50,
        "eu-west-1",
        "eu-west-1b",
        4,
        4,
    )
    assert p3.price_per_gpu == pytest.approx(0.875)
    assert p3.timestamp == (NOW - dt.timedelta(hours=3)).isoformat()
    assert (g5.price, g5.zone, g5.price_per_gpu, g5.zones_seen) == (0.42, "us-east-1c", 0.42, 3)
    assert (g4.price, g4.price_per_gpu, g4.gpus, g4.zones_seen) == (None, None, 1, 0)


def test_cli_table_and_json(clients, capsys, monkeypatch):
    from nettle.cli.cloud import run
    from nettle.cloud import prices

    monkeypatch.setattr(prices, "_now", lambda: NOW)  # so the stubbed StartTime matches
    args = argparse.Namespace(instance_types=",".join(TYPES), regions=None, hours=6.0, json=True)
    assert run(args, client_factory=clients.__getitem__) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["price_per_gpu"] for o in out["offers"]] == [0.875, 0.42, None]
    assert [o["zone"] for o in out["offers"]] == ["eu-west-1b", "us-east-1c", None]


def test_unknown_instance_type_is_named():
    client = boto3.session.Session().client("ec2", region_name="eu-west-1")
    with Stubber(client) as stub:
        stub.add_client_error(
            "describe_instance_types",
            service_error_code="InvalidInstanceType",
            service_message="The following supplied instance types do not exist: [p9.huge]",
            expected_params={"InstanceTypes": ["g5.xlarge", "p9.huge"]},
        )
        with pytest.raises(CloudError, match=r"unknown instance type\(s\): p9.huge \("):
            spot_prices(["g5.xlarge", "p9.huge"], ["eu-west-1"], client_factory=lambda r: client)
    with pytest.raises(CloudError, match="look like p3.2xlarge"):
        spot_prices(["p3 2xlarge"], ["eu-west-1"], client_factory=lambda r: client)


def test_missing_credentials_and_boto3_are_one_line_errors(monkeypatch, capsys):
    from nettle.cli import main

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    argv = ["cloud", "prices", "--instance-types", "g5.xlarge", "--regions", "us-east-1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nettle cloud: error: no AWS credentials") and err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "boto3", None)
    assert main(argv) == 2
    assert "pip install 'nettle[cloud]'" in capsys.readouterr().err
