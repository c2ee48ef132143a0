def test_health_and_ready(app_client):
    assert app_client.get("/healthz").json() == {"status": "ok"}
    assert app_client.get("/readyz").status_code == 200


def test_book_and_conflict(tenant):
    room = tenant.admin.resource(name="Room 1")
    first = tenant.booker.book(room["id"], "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z")
    assert first.status_code == 201, first.text
    clash = tenant.booker.book(room["id"], "2030-01-01T10:30:00+00:00", "2030-01-01T12:00:00Z")
    assert clash.status_code == 409
    assert clash.headers["content-type"] == "application/problem+json"
    assert clash.json()["conflicts"][0]["id"] == first.json()["id"]
