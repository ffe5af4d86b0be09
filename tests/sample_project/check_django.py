from django.test import Client, SimpleTestCase

from segment_middleware.testing import capture


class SignupTests(SimpleTestCase):
    def test_signup_is_tracked(self):
        with capture() as events:
            response = self.client.post("/signup/", {"plan": "pro"})
        assert response.status_code == 200
        events.assert_sent("track", event="Signed Up", properties={"plan": "pro"})
        assert events.pages("signup")[0]["properties"]["status"] == 200


def test_signup_with_the_fixture(segment_events):
    Client().post("/signup/", {"plan": "team"})
    track = segment_events.assert_sent("track", event="Signed Up", properties={"plan": "team"})
    assert track["anonymousId"] == segment_events.pages()[0]["anonymousId"]
