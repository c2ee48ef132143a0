"""A webhook URL whose host is not a DNS name (an empty label, a label over 63 characters, a
name over 253, a character no label may hold) is a 422 naming `url`: whether the server then
resolves the host (the default) or allows private receivers and does not."""

from __future__ import annotations

import string
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reservations.app import create_app
from reservations.config import Settings
from reservations.kit.clock import Clock
from tests.support.api import Api, Tenant, new_tenant
from tests.support.servers import make_settings

PROBLEM = "application/problem+json"
LDH = string.ascii_lowercase + string.digits + "-"


@st.composite
def label(draw: st.DrawFn, low: int = 1, high: int = 63) -> str:
    n = draw(st.integers(low, high))
    inner = draw(st.text(LDH, min_size=max(n - 2, 0), max_size=max(n - 2, 0)))
    ends = draw(st.text(string.ascii_lowercase + string.digits, min_size=2, max_size=2))
    return (ends[0] + inner + ends[1])[:n] if n > 1 else ends[0]


@st.composite
def good_host(draw: st.DrawFn) -> str:
    labels = draw(st.lists(label(), min_size=1, max_size=4))
    host = ".".join([*labels, "invalid"])
    return host[-253:].lstrip(".-") or "a.invalid"


@st.composite
def bad_host(draw: st.DrawFn) -> str:
    labels = draw(st.lists(label(), min_size=1, max_size=3))
    at = draw(st.integers(0, len(labels)))
    kind = draw(st.sampled_from(["empty", "long-label", "long-host", "hyphen", "character"]))
    if kind == "empty":
        labels.insert(at, "")
    elif kind == "long-label":
        labels.insert(at, draw(label(64, 200)))
    elif kind == "long-host":
        labels = [draw(label(63, 63)) for _ in range(4)] + labels  # 256 and more
    elif kind == "hyphen":
        labels.insert(at, draw(st.sampled_from(["-a", "a-", "-"])))
    else:
        labels.insert(at, "a" + draw(st.sampled_from(list("%*!$'(),;=~+&"))) + "b")
    return ".".join([*labels, "invalid"])


def check_refused(r: httpx.Response) -> None:
    where = f"{r.request.url}: {r.status_code} {r.text[:300]}"
    assert r.status_code == 422, where
    assert r.headers["content-type"] == PROBLEM, where
    body = r.json()
    assert [e["field"] for e in body["errors"]] == ["url"], where
    assert "host" in body["detail"], where


@pytest.fixture(scope="module")
def private_allowed(settings: Settings) -> Iterator[Tenant]:
    """An app that allows private receivers: it checks a URL's form and resolves nothing."""
    allowing = make_settings(
        settings.database_url,
        redis_url=settings.redis_url,
        redis_key_prefix=settings.redis_key_prefix,
        webhooks_allow_private=True,
    )
    with TestClient(create_app(allowing, Clock()), raise_server_exceptions=False) as client:
        yield new_tenant(client)


HYPOTHESIS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HYPOTHESIS
@given(host=bad_host(), path=st.sampled_from(["/", "/hook", ":8443/x?y=1"]))
def test_a_host_that_is_no_dns_name_is_refused(
    tenant: Tenant, private_allowed: Tenant, host: str, path: str
) -> None:
    url = f"https://{host}{path}"
    for admin in (tenant.admin, private_allowed.admin):
        check_refused(admin.post("/v1/webhooks", json={"url": url}))
    made = private_allowed.admin.post("/v1/webhooks", json={"url": "https://ok.invalid/"})
    assert made.status_code == 201, made.text
    wid = made.json()["id"]
    check_refused(private_allowed.admin.patch(f"/v1/webhooks/{wid}", json={"url": url}))
    assert private_allowed.admin.get(f"/v1/webhooks/{wid}").json()["url"] == "https://ok.invalid/"
    assert private_allowed.admin.delete(f"/v1/webhooks/{wid}").status_code == 204


@HYPOTHESIS
@given(host=good_host())
def test_a_dns_name_at_the_limits_is_taken(private_allowed: Tenant, host: str) -> None:
    api: Api = private_allowed.admin
    url = f"https://{host}/hook"
    r = api.post("/v1/webhooks", json={"url": url})
    assert r.status_code == 201, (url, r.text)
    assert api.get(f"/v1/webhooks/{r.json()['id']}").json()["url"] == url
    assert api.delete(f"/v1/webhooks/{r.json()['id']}").status_code == 204


@pytest.mark.parametrize(
    "url",
    [
        "https://a..example.com/",
        "https://.example.com/",
        "https://" + "a" * 64 + ".example.com/",
        "https://" + ".".join(["a" * 63] * 4) + ".com/",
    ],
)
def test_the_reported_hosts_are_refused(tenant: Tenant, url: str) -> None:
    check_refused(tenant.admin.post("/v1/webhooks", json={"url": url}))
