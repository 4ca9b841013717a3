"""Two customers of one organization and a customer of another try each other's portal URLs:
fragments, charts and spent session URLs are all 404, and no page shows another's data."""

import itertools
import uuid
from urllib.parse import urlsplit

from django.test import Client

from metering.models import CustomerMeter
from portal import sign_in


def test_customers_reach_only_their_own_data(world, signed_in):
    people = {"alice": world.alice, "bob": world.bob, "carol": world.carol}
    spent_urls = {}
    clients = {}
    for name, customer in people.items():
        _, _, url = sign_in.create_api_session(
            customer=customer, return_url=None, base_url="http://testserver/"
        )
        parts = urlsplit(url)
        spent_urls[name] = f"{parts.path}?{parts.query}"
        clients[name] = Client()
        assert clients[name].get(spent_urls[name]).status_code == 302
    meters_of = {
        name: list(CustomerMeter.objects.filter(customer=c).values_list("pk", flat=True))
        for name, c in people.items()
    }
    assert all(len(ids) == 2 for ids in meters_of.values())

    tried = 0
    for attacker, victim in itertools.permutations(people, 2):
        client = clients[attacker]
        own_slug = people[attacker].organization.slug
        victim_slug = people[victim].organization.slug
        urls = [spent_urls[victim]]
        for cm in meters_of[victim]:
            urls += [
                f"/portal/{victim_slug}/meters/{cm}/chart",
                f"/portal/{own_slug}/meters/{cm}/chart",
            ]
        if victim_slug != own_slug:
            urls.append(f"/portal/{victim_slug}/usage/meters")
        for url in urls:
            for headers in ({}, {"HX-Request": "true"}):
                response = client.get(url, headers=headers)
                assert response.status_code == 404, (attacker, victim, url, headers)
                assert people[victim].email not in response.content.decode()
                tried += 1
        # The other organization's usage page is its sign-in page, not anyone's data.
        if victim_slug != own_slug:
            page = client.get(f"/portal/{victim_slug}/")
            assert page.status_code == 302
            assert page["Location"].startswith(f"/portal/{victim_slug}/sign-in")
        own_page = client.get(f"/portal/{own_slug}/").content.decode()
        assert people[attacker].email in own_page
        assert people[victim].email not in own_page
        for cm in meters_of[victim]:
            assert str(cm) not in own_page
    # 2 same-organization pairs x 5 URLs + 4 cross-organization pairs x 6 URLs, each with and
    # without HX-Request
    assert tried == 2 * (2 * 5 + 4 * 6)

    # Each customer still reaches their own charts.
    for name, client in clients.items():
        slug = people[name].organization.slug
        for cm in meters_of[name]:
            assert client.get(f"/portal/{slug}/meters/{cm}/chart").status_code == 200


def test_unknown_ids_and_organizations_are_404(world, signed_in):
    client = signed_in(world.alice)
    assert client.get(f"/portal/acme-inc/meters/{uuid.uuid4()}/chart").status_code == 404
    assert client.get("/portal/acme-inc/meters/not-a-uuid/chart").status_code == 404
    assert client.get("/portal/nobody/").status_code == 404
    assert client.get("/portal/nobody/usage/meters").status_code == 404


def test_archived_meter_chart_is_404(world, signed_in):
    from metering import meters

    cm = CustomerMeter.objects.get(customer=world.alice, meter=world.acme.tokens)
    client = signed_in(world.alice)
    assert client.get(f"/portal/acme-inc/meters/{cm.pk}/chart").status_code == 200
    meters.set_archived(meter=world.acme.tokens, archived=True)
    assert client.get(f"/portal/acme-inc/meters/{cm.pk}/chart").status_code == 404
