"""The webhook URL policy, without I/O: what it refuses whatever the settings, and what the
settings decide."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.stablecoin.endpoints import (
    UrlPolicy,
    WebhookAddressRefused,
    WebhookUrlSelf,
    free_slot,
)

NETWORKS = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "192.168.0.0/16", "fc00::/7", "0.0.0.0/8", "100.64.0.0/10")
]

policies = st.builds(
    UrlPolicy,
    allow_loopback=st.booleans(),
    refused=st.lists(st.sampled_from(NETWORKS), unique=True).map(tuple),
)


def _link_local_v4() -> st.SearchStrategy[ipaddress.IPv4Address]:
    base = int(ipaddress.IPv4Address("169.254.0.0"))
    return st.integers(base, base + 2**16 - 1).map(ipaddress.IPv4Address)


def _link_local_v6() -> st.SearchStrategy[ipaddress.IPv6Address]:
    base = int(ipaddress.IPv6Address("fe80::"))
    return st.integers(base, base + 2**118 - 1).map(ipaddress.IPv6Address)


@given(policies, _link_local_v4())
def test_link_local_and_metadata_v4_are_refused_under_every_policy(
    policy: UrlPolicy, address: ipaddress.IPv4Address
) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    for form in (address, mapped):
        assert policy.refusal(form) is not None
        with pytest.raises(WebhookAddressRefused):
            policy.parse(f"http://{form if form.version == 4 else f'[{form}]'}:443/hook")


@given(policies, _link_local_v6())
def test_link_local_v6_is_refused_under_every_policy(
    policy: UrlPolicy, address: ipaddress.IPv6Address
) -> None:
    assert policy.refusal(address) is not None


@given(policies)
def test_cloud_metadata_addresses_are_refused_under_every_policy(policy: UrlPolicy) -> None:
    unspecified = ("0.0.0.0", "::")  # noqa: S104 (judged, not bound)
    for literal in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", *unspecified):
        assert policy.refusal(ipaddress.ip_address(literal)) is not None, literal


@given(st.integers(0, 2**24 - 1))
def test_loopback_is_refused_unless_allowed(offset: int) -> None:
    address = ipaddress.IPv4Address(int(ipaddress.IPv4Address("127.0.0.0")) + offset)
    assert UrlPolicy(allow_loopback=False).refusal(address) is not None
    assert UrlPolicy(allow_loopback=True).refusal(address) is None


def test_configured_networks_are_refused_and_others_are_not() -> None:
    policy = UrlPolicy(refused=(ipaddress.ip_network("10.0.0.0/8"),))
    assert policy.refusal(ipaddress.ip_address("10.9.9.9")) is not None
    assert policy.refusal(ipaddress.ip_address("::ffff:10.9.9.9")) is not None
    assert policy.refusal(ipaddress.ip_address("2002:0a09:0909::1")) is not None  # 6to4 of 10.x
    assert policy.refusal(ipaddress.ip_address("192.0.2.10")) is None


def test_the_gateways_own_address_is_refused_by_name_and_by_loopback_port() -> None:
    policy = UrlPolicy(
        allow_loopback=True,
        self_names=frozenset({("gateway.example.kz", 443)}),
        self_ports=frozenset({8080}),
    )
    with pytest.raises(WebhookUrlSelf):
        policy.parse("https://GATEWAY.example.kz./hooks")
    with pytest.raises(WebhookUrlSelf):
        policy.parse("http://127.0.0.2:8080/hooks")
    target = policy.parse("http://127.0.0.1:8081/hooks")
    assert (target.host, target.port) == ("127.0.0.1", 8081)
    assert policy.parse("https://gateway.example.kz:8443/").port == 8443


def test_free_slot_takes_the_lowest_place_and_refuses_past_the_limit() -> None:
    assert free_slot([], 3) == 1
    assert free_slot([1, 3], 3) == 2
    with pytest.raises(Exception, match="at most 3"):
        free_slot([1, 2, 3], 3)
