"""DELETE_ON_USER_DELETE: deleting a Django user files its deletion once the transaction
commits, never on rollback, and purges the user's rows from the local store."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest.importorskip("django")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import override_settings  # noqa: E402
from helpers import WRITE_KEY, wait_until  # noqa: E402
from public_api_receiver import PublicAPIReceiver  # noqa: E402
from test_privacy import TOKEN  # noqa: E402

import segment_middleware  # noqa: E402
from segment_middleware import erasure  # noqa: E402
from segment_middleware.django import conf  # noqa: E402
from segment_middleware.store import Store  # noqa: E402

call_command("migrate", run_syncdb=True, verbosity=0)

User = get_user_model()


class Rollback(Exception):
    pass


@pytest.fixture(autouse=True)
def _forget_deletions() -> Iterator[None]:
    yield
    erasure.reset()


@pytest.fixture
def api(store_path: str) -> Iterator[PublicAPIReceiver]:
    with PublicAPIReceiver(TOKEN) as server:
        config = {
            "WRITE_KEY": WRITE_KEY,
            "HOST": "http://127.0.0.1:9",  # nothing is delivered: the page calls stay spooled
            "MAX_RETRIES": 0,
            "FLUSH_INTERVAL": 0.05,
            "LOCAL_STORE": store_path,
            "PUBLIC_API_TOKEN": TOKEN,
            "PUBLIC_API_HOST": server.url,
            "DELETE_ON_USER_DELETE": True,
        }
        with override_settings(SEGMENT=config):
            conf.reset()
            yield server
        segment_middleware.flush(5)
        conf.reset()


def test_a_deleted_user_is_filed_after_commit_and_purged(api: PublicAPIReceiver, store_path: str) -> None:
    user = User.objects.create(username="leaving")
    pk = str(user.pk)
    conf.get_runtime().tracker(user_id=pk, anonymous_id="a-leaving").track("Order Completed")
    assert segment_middleware.flush(10)
    wait_until(lambda: any(r.user_id == pk for r in Store(store_path).events()), "the spooled row")
    with transaction.atomic():
        user.delete()
        assert api.seen == [], "nothing filed before the commit"
    (post,) = api.wait_for_posts(1)
    assert post.body == {
        "regulationType": "SUPPRESS_WITH_DELETE",
        "subjectType": "USER_ID",
        "subjectIds": [pk],
    }
    wait_until(lambda: not [r for r in Store(store_path).events() if r.user_id == pk], "the purge")


def test_a_rolled_back_deletion_files_nothing(api: PublicAPIReceiver) -> None:
    kept = User.objects.create(username="staying")
    gone = User.objects.create(username="going")
    gone_pk = str(gone.pk)  # delete() sets it to None
    with pytest.raises(Rollback), transaction.atomic():
        kept.delete()
        raise Rollback
    with transaction.atomic():
        with pytest.raises(Rollback), transaction.atomic():  # a savepoint rolled back
            User.objects.get(username="staying").delete()
            raise Rollback
        gone.delete()
    # The filer thread takes deletions in order: once the committed one is filed, a
    # rolled-back one would have been filed before it.
    (post,) = api.wait_for_posts(1)
    assert post.body["subjectIds"] == [gone_pk]
    assert User.objects.filter(username="staying").exists()
    assert [s.body["subjectIds"] for s in api.seen] == [post.body["subjectIds"]]


def test_off_by_default(api: PublicAPIReceiver, store_path: str) -> None:
    with override_settings(SEGMENT={"LOCAL_STORE": store_path, "PUBLIC_API_TOKEN": TOKEN}):
        conf.reset()
        User.objects.create(username="quiet").delete()
    marker = User.objects.create(username="marker")
    marker_pk = str(marker.pk)
    marker.delete()  # DELETE_ON_USER_DELETE again (the fixture's settings): the marker's deletion
    (post,) = api.wait_for_posts(1)
    assert len(api.seen) == 1 and post.body["subjectIds"] == [marker_pk]


def test_a_bulk_deletion_is_filed_together_each_id_once(api: PublicAPIReceiver) -> None:
    users = [User.objects.create(username=f"bulk{i}") for i in range(30)]
    pks = {str(u.pk) for u in users}
    with transaction.atomic():
        User.objects.filter(username__startswith="bulk").delete()

    def filed() -> list[str]:
        return [i for post in api.posts() for i in post.body["subjectIds"]]

    wait_until(lambda: set(filed()) == pks, "every deleted user filed")
    assert sorted(filed()) == sorted(pks), "each once"
    assert len(api.posts()) <= 3, "a commit's deletions share regulations (GATHER), not one call each"
