"""The tracker views call: ``request.segment`` / ``current()`` / ``tracker()``.

A call validates and copies its arguments right away (so misuse raises in the view that
made it) and hands a half-built message to the delivery queue, which builds it whole (the
request context, messageId and timestamp string) as it is queued or on the sender thread
(``Settings.builds_when_queued``).
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .jsonable import jsonable
from .spec_methods import B2B, Ecommerce

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .context import RequestFacts
    from .keywords import CallOptions
    from .profiles import Profile

__all__ = ["CURRENT", "Tracker", "checked_id", "current", "untracked"]

_OPTIONS = frozenset(("context", "integrations", "timestamp", "message_id"))
_UNSET: Any = object()

Sink = Callable[[dict[str, Any], "RequestFacts | None", float], None]

#: The request being handled's tracker (a background job's, in a job): what :func:`current`
#: returns. Adapters and job runners set and reset it around the work, once per request:
#: ``token = CURRENT.set(tracker)`` ... ``CURRENT.reset(token)``.
CURRENT: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar("segment_tracker", default=None)


def current() -> Tracker | None:
    """The tracker of the request being handled, or None outside a request."""
    return CURRENT.get()


def untracked() -> Tracker:
    """The tracker of a request that is not tracked (excluded, opted out, or our own start
    failed): views call it as usual; its calls are validated, then dropped."""
    return Tracker(None, enabled=False)


def checked_id(value: Any, name: str) -> str:
    """``value`` as an id (a non-empty string of at most 1024 characters, or an int as its
    text); TypeError/ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{name} must be a string or an int, got {type(value).__name__}")
    text = str(value)
    if not text or len(text) > 1024:
        raise ValueError(f"{name} must be a non-empty string of at most 1024 characters")
    return text


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping (dict), got {type(value).__name__}")
    return jsonable(value, name)  # type: ignore[no-any-return]


def _name(value: Any, name: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise (TypeError if not isinstance(value, str) else ValueError)(f"{name} must be a non-empty string")
    return value


class Tracker:
    """Segment calls bound to one visitor (and, in a request, to its context).

    ``title`` set by a view is sent with the request's automatic page call.
    """

    __slots__ = (
        "_anonymous_id",
        "_ended",
        "_facts",
        "_sink",
        "_user_id",
        "_user_resolver",
        "enabled",
        "new_visitor",
        "title",
    )

    def __init__(
        self,
        sink: Sink | None,
        user_id: Any = None,
        anonymous_id: str | None = None,
        facts: RequestFacts | None = None,
        user_resolver: Callable[[], str | None] | None = None,
        enabled: bool = True,
        new_visitor: bool = False,
    ) -> None:
        self._sink = sink
        self._user_id: Any = _UNSET if user_resolver is not None and user_id is None else user_id
        self._user_resolver = user_resolver
        self._anonymous_id = anonymous_id
        self._facts = facts
        self._ended = False  # the request's page call is queued (Runtime.end)
        self.enabled = enabled and sink is not None
        self.title: str | None = None
        self.new_visitor = new_visitor  # no anonymousId came with the request: set the cookie

    # ------------------------------------------------------------------ ids
    @property
    def user_id(self) -> str | None:
        """The userId messages carry: identify()'s, else the auth layer's (looked up once)."""
        if self._user_id is _UNSET:
            try:
                self._user_id = self._user_resolver() if self._user_resolver else None
            except Exception:
                self._user_id = None
        return self._user_id  # type: ignore[no-any-return]

    @property
    def anonymous_id(self) -> str | None:
        return self._anonymous_id

    @property
    def facts(self) -> RequestFacts | None:
        """The raw facts of the request this tracker belongs to (None outside one)."""
        return self._facts

    @property
    def owner(self) -> Any:
        """The runtime this tracker's calls go to (None for an untracked request's): its
        settings are the ones that apply to this visitor's request."""
        return getattr(self._sink, "__self__", None)

    def identify_as(self, user_id: Any) -> None:
        """Make ``user_id`` this tracker's userId without sending anything."""
        self._user_id = checked_id(user_id, "user_id")

    # ------------------------------------------------------------------ the request's end
    @property
    def ended(self) -> bool:
        """The request's page call is queued (or was skipped): later ends do nothing."""
        return self._ended

    def end_request(self, user_id: str | None) -> str | None:
        """Mark the request over and return its page call's userId: the auth layer's fresh
        lookup ``user_id`` (a log-in during the view counts), else the id identify() set;
        never a second auth lookup for an anonymous visitor. The id is kept for calls made
        later (a streamed body).

        The resolver refers to the framework's request: request.segment -> tracker ->
        resolver -> request is a reference cycle, which would leave every request's whole
        object graph to the cyclic garbage collector instead of reference counting. The
        request is over, so the tracker lets go of it (tests/test_no_cycles.py)."""
        self._ended = True
        self._user_resolver = None
        uid = self._user_id
        if uid is _UNSET:
            uid = self._user_id = user_id
        elif user_id is not None:
            uid = user_id
        return uid  # type: ignore[no-any-return]

    def skip_request(self) -> None:
        """Mark the request over without its page call (a route that matched nothing, a
        URL the defaults leave out); lets go of the request as :meth:`end_request` does."""
        self._ended = True
        self._user_resolver = None

    def known_user(self, user_id: str | None) -> None:
        """The auth layer's userId, looked up before the view runs (async Django, where it
        cannot be looked up lazily from sync code); identify() may still change it."""
        self._user_id = user_id

    def reset(self, anonymous_id: str) -> None:
        """Forget the user and take a new anonymousId (log-out); the response sets its cookie."""
        self._user_id = None
        self._user_resolver = None
        self._anonymous_id = anonymous_id
        self.new_visitor = True

    # ------------------------------------------------------------------ the profile
    @property
    def profile(self) -> Profile:
        """This visitor's Segment profile (Unify): ``traits()`` and ``audiences()`` from the
        Profile API (``SPACE_ID``, ``PROFILES_TOKEN``), ``atraits()`` / ``aaudiences()`` in
        async views; each answers within PROFILE_TIMEOUT or gives None, never raises. The
        visitor is the userId when there is one, else the anonymousId; an untracked
        request's profile is always None."""
        from .profiles import Profile

        owner = self.owner
        if owner is None:
            return Profile(None, None, None)
        return Profile(owner.settings, self.user_id, self._anonymous_id)

    # ------------------------------------------------------------------ the Segment Spec
    @property
    def ecommerce(self) -> Ecommerce:
        """E-commerce Spec v2 events: ``request.segment.ecommerce.order_completed(...)``."""
        return Ecommerce(self)

    @property
    def b2b(self) -> B2B:
        """B2B SaaS Spec events: ``request.segment.b2b.signed_up(...)``."""
        return B2B(self)

    # ------------------------------------------------------------------ calls
    # Every call takes the options of keywords.CallOptions: ``context`` (merged into the
    # request's context, key by key), ``integrations`` (which destinations get it, over the
    # INTEGRATIONS setting), ``timestamp`` (a datetime, for events recorded after the fact;
    # naive is UTC) and ``message_id`` (your own id, which Segment de-duplicates on). An
    # unknown option is a TypeError at the call, as is an argument of the wrong type.
    def track(
        self, event: str, properties: Mapping[str, Any] | None = None, **options: Unpack[CallOptions]
    ) -> None:
        """Send a track call: ``event`` (a non-empty name, "Order Completed") with its
        ``properties``, from this tracker's userId/anonymousId, in the request's context.

        Options: ``context``, ``integrations``, ``timestamp``, ``message_id``.
        """
        _name(event, "event", required=True)
        self._send(
            {"type": "track", "event": event, "properties": _mapping(properties, "properties")}, options
        )

    def identify(
        self,
        user_id: str | int | None = None,
        traits: Mapping[str, Any] | None = None,
        **options: Unpack[CallOptions],
    ) -> None:
        """Send an identify call with ``traits``. A ``user_id`` also becomes this tracker's
        userId for the rest of the request, so the calls after it (and the page call) carry
        it: log-in stitching, the anonymousId linked to the user.

        Options: ``context``, ``integrations``, ``timestamp``, ``message_id``.
        """
        msg: dict[str, Any] = {"type": "identify", "traits": _mapping(traits, "traits")}
        if user_id is not None:
            self._user_id = checked_id(user_id, "user_id")
        self._send(msg, options)

    def page(
        self,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        category: str | None = None,
        **options: Unpack[CallOptions],
    ) -> None:
        """Send a page call of your own, besides the request's automatic one (to name that
        one, set ``title``): ``name``, ``category`` and ``properties``.

        Options: ``context``, ``integrations``, ``timestamp``, ``message_id``.
        """
        self._send(self._named("page", name, properties, category), options)

    def screen(
        self,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        category: str | None = None,
        **options: Unpack[CallOptions],
    ) -> None:
        """Send a screen call (a mobile app's screen, reported by its backend): ``name``,
        ``category`` and ``properties``.

        Options: ``context``, ``integrations``, ``timestamp``, ``message_id``.
        """
        self._send(self._named("screen", name, properties, category), options)

    def group(
        self, group_id: str | int, traits: Mapping[str, Any] | None = None, **options: Unpack[CallOptions]
    ) -> None:
        """Send a group call: this user belongs to ``group_id`` (an account, a company, a
        team), with the group's ``traits``.

        Options: ``context``, ``integrations``, ``timestamp``, ``message_id``.
        """
        msg = {
            "type": "group",
            "groupId": checked_id(group_id, "group_id"),
            "traits": _mapping(traits, "traits"),
        }
        self._send(msg, options)

    def alias(
        self, user_id: str | int, previous_id: str | int | None = None, **options: Unpack[CallOptions]
    ) -> None:
        """Send an alias call linking ``previous_id`` (default: this visitor's anonymousId,
        else its userId) to ``user_id``, for destinations that need one to merge identities
        (Mixpanel's original ID merge, Kissmetrics).

        Options: ``context``, ``integrations``, ``timestamp``, ``message_id``.
        """
        new_id = checked_id(user_id, "user_id")
        previous = previous_id if previous_id is not None else self._anonymous_id or self.user_id
        if previous is None:
            raise ValueError("alias needs previous_id: this tracker has no anonymousId or userId")
        msg = {"type": "alias", "previousId": checked_id(previous, "previous_id"), "userId": new_id}
        self._send(msg, options, ids=False)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _named(kind: str, name: Any, properties: Any, category: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": kind, "properties": _mapping(properties, "properties")}
        if name is not None:
            msg["name"] = _name(name, "name", required=True)
        if category is not None:
            msg["category"] = _name(category, "category", required=True)
        return msg

    def _send(self, msg: dict[str, Any], options: Mapping[str, Any], *, ids: bool = True) -> None:
        ts = time.time()
        if options:
            _apply_options(msg, options)
        if not self.enabled:
            return  # untracked request (opt-out, excluded path): validated above, then dropped
        if ids:
            user_id = self.user_id
            if user_id is not None:
                msg["userId"] = user_id
            if self._anonymous_id is not None:
                msg["anonymousId"] = self._anonymous_id
            if user_id is None and self._anonymous_id is None:
                raise ValueError("no userId or anonymousId: pass user_id or anonymous_id to tracker()")
        self._sink(msg, self._facts, ts)  # type: ignore[misc]


def _apply_options(msg: dict[str, Any], options: Mapping[str, Any]) -> None:
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(
            f"unexpected option {sorted(unknown)[0]!r}; options are {', '.join(sorted(_OPTIONS))}"
        )
    if options.get("context") is not None:
        msg["context"] = _mapping(options["context"], "context")
    if options.get("integrations") is not None:
        msg["integrations"] = _mapping(options["integrations"], "integrations")
    ts = options.get("timestamp")
    if ts is not None:
        if not isinstance(ts, _dt.datetime):
            raise TypeError(f"timestamp must be a datetime, got {type(ts).__name__}")
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=_dt.timezone.utc)
        msg["timestamp"] = ts.isoformat()
    if options.get("message_id") is not None:
        msg["messageId"] = _name(options["message_id"], "message_id", required=True)
