"""The program's rules: pure functions of (catalog, events, now, request).

A package along its seams, each module pure (no files, clock or environment)
and importing only `bonuscli.model` and the modules above it in this list:

- `dates`: instants, local dates, expiry, activation, tenure, card tiers, the formula;
- `links`: facts across two ledgers (a gift's or referral's outcome, the peers a replay needs);
- `member`: a member's state and the operations on its lots; plain data for snapshots;
- `replay`: the event loop that turns a ledger into a `Member` as of a moment;
- `status`: what a member is at a moment, and the refusals every decision shares;
- `decide`: each command's decision, a Decision (events + view) or a Refusal;
- `views`: balance, forecast, explain and the report's per-member figures.

This module re-exports their public names, so callers say `rules.earn(...)`.
"""

from bonuscli.model import Decision, Refusal  # noqa: F401
from bonuscli.rules.dates import (  # noqa: F401
    Calendar,
    activation_instant,
    add_months,
    calendar_of,
    card_rate,
    closed,
    day_start,
    expiry_date,
    instant,
    local,
    local_date,
    points_for,
    rate,
    seconds,
    tenure_coefficient,
    tenure_for_months,
    whole_months,
)
from bonuscli.rules.decide import (  # noqa: F401
    accept,
    adjust,
    earn,
    gift,
    gift_id_for,
    join,
    leave,
    redeem,
    refund,
    seals,
)
from bonuscli.rules.links import components, gift_outcome, peers_needed, peers_of, referral_outcome  # noqa: F401
from bonuscli.rules.member import (  # noqa: F401
    STATE_FIELDS,
    STATE_FORMAT,
    Member,
    UnknownEvent,
    from_plain,
    settled_state,
    to_plain,
)
from bonuscli.rules.replay import EVENT_TYPES, advance_to, extend, play, replay  # noqa: F401
from bonuscli.rules.status import in_order, must_be_active, not_member, status  # noqa: F401
from bonuscli.rules.views import balance, calc, explain, forecast, next_expiry, summary  # noqa: F401


def from_iso(text):
    """An ISO instant as an aware datetime (for callers that want datetimes)."""
    import datetime as dt

    return dt.datetime.fromisoformat(text)
