"""What a seed plays: people whose identifiers overlap, their leads, and how the world misbehaves.

A seed draws a scenario: a handful of people (some sharing a household phone, some behind a
vendor's placeholder number, some known by a CRM reference beside their email, some only by
the reference, some whose email comes in another case), a few of them already in Klaviyo
(some of those with an address that bounced), and their leads (a subscribe's often with its
consent evidence), each one action by one path at one moment (a vendor may send the same
lead twice, by two paths). It also draws how the world behaves: Klaviyo's search lag (within
the stack's settle bound), how often calls fail and how, container clocks apart by up to
5 s, an SQS visibility timeout short enough for a second delivery while the first still runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from klaviyo_leads.actions.create.identity import normalised

# The actions a seed may use, and how often: every create path, and those that change a
# profile, a list membership or consent, or record an event beside them.
ACTION_WEIGHTS = {
    "create_profile": 8,
    "upsert_profile": 3,
    "update_profile": 2,
    "get_profiles": 1,
    "subscribe_profile_to_list": 2,
    "unsubscribe_profile": 1,
    "add_profile_to_list": 1,
    "remove_profile_from_list": 1,
    "track_event": 2,
}
ACTIONS = tuple(ACTION_WEIGHTS)
LIST_ID = "SimLst"  # a single opt-in list every seed's account has
# What each action's lead carries beside the person's identifiers.
_SETTINGS: dict[str, dict[str, Any]] = {
    "update_profile": {"title": "Updated"},
    "subscribe_profile_to_list": {"klaviyo.list_id": LIST_ID},
    "unsubscribe_profile": {"klaviyo.list_id": LIST_ID},
    "add_profile_to_list": {"klaviyo.list_id": LIST_ID},
    "remove_profile_from_list": {"klaviyo.list_id": LIST_ID},
    "track_event": {"klaviyo.metric_name": "Lead Received"},
}
# The ways a lead comes in, and how often a seed uses each.
PATHS = {
    "webhook_keyed": 3,
    "webhook_unkeyed": 2,
    "async": 1,
    "queue": 3,
    "queue_batch": 2,  # a burst on the queue: enough leads for a coalesced batch
    "lead_file": 1,  # a file of rows: this lead's and others', some of them its household's
    "eventbridge": 1,
    "direct": 1,
}
PLACEHOLDER_PHONE = "+12025550100"  # the vendor's number on leads that had none


@dataclass(frozen=True)
class Person:
    name: str
    email: str | None = None
    phone: str | None = None
    reference: str | None = None
    bounced: bool = False  # in Klaviyo already, its email suppressed for a hard bounce

    def identifiers(self) -> dict[str, str]:
        values = {"email": self.email, "phone_number": self.phone, "external_id": self.reference}
        return {k: normalised(k, v) for k, v in values.items() if v}


@dataclass
class Lead:
    number: int
    person: Person
    action: str
    path: str
    fields: dict[str, Any]
    at: float  # seconds after the start

    def describe(self) -> str:
        shown = {k: v for k, v in self.fields.items() if k != "first_name"}
        return f"lead {self.number} ({self.person.name}) {self.action} by {self.path}: {shown}"


@dataclass
class Behaviour:
    search_lag: float
    import_delay: float
    apply_delay: float  # before a subscribe or unsubscribe job, or an event, takes effect
    klaviyo_faults: float  # the chance each Klaviyo call fails
    aws_faults: float  # the chance each DynamoDB, SQS or EventBridge call fails
    kill: float  # the chance a container dies at any point of an invocation
    slow: float  # the chance a Klaviyo answer takes 20-60 s
    visibility: float  # the queues' visibility timeout
    clock_spread: float  # container clocks are up to this far apart
    coalesce: bool
    containers: int  # per function


@dataclass
class Scenario:
    seed: int
    people: list[Person]
    leads: list[Lead]
    existing: list[Person]  # already in Klaviyo, made long before
    behaviour: Behaviour
    settle_seconds: float = 10.0

    def without(self, numbers: set[int]) -> Scenario:
        kept = [lead for lead in self.leads if lead.number not in numbers]
        return Scenario(
            self.seed, self.people, kept, self.existing, self.behaviour, self.settle_seconds
        )

    def describe(self) -> list[str]:
        b = self.behaviour
        lines = [
            f"seed {self.seed}: search lag {b.search_lag:.1f} s (settle bound "
            f"{self.settle_seconds:g} s), Klaviyo faults {b.klaviyo_faults:.0%}, AWS faults "
            f"{b.aws_faults:.0%}, kills {b.kill:.1%}, slow answers {b.slow:.0%}, visibility "
            f"{b.visibility:g} s, clocks within {b.clock_spread:g} s, coalescing "
            f"{'on' if b.coalesce else 'off'}, {b.containers} containers a function",
        ]
        lines += [f"  in Klaviyo already: {p}" for p in self.existing]
        lines += [f"  {lead.describe()} at {lead.at:.2f} s" for lead in self.leads]
        return lines


@dataclass
class _People:
    rng: random.Random
    people: list[Person] = field(default_factory=list)

    def person(self, **identifiers: str | None) -> Person:
        made = Person(f"p{len(self.people) + 1}", **identifiers)
        self.people.append(made)
        return made


def scenario(seed: int) -> Scenario:
    rng = random.Random(seed)
    behaviour = Behaviour(
        search_lag=rng.choice([0.0, rng.uniform(0.0, 10.0), 10.0]),
        import_delay=rng.choice([0.0, 1.0, rng.uniform(0.0, 8.0)]),
        apply_delay=rng.choice([0.0, 2.0, rng.uniform(0.0, 120.0)]),
        klaviyo_faults=rng.choice([0.0, 0.05, 0.15, 0.3]),
        aws_faults=rng.choice([0.0, 0.0, 0.02, 0.08]),
        kill=rng.choice([0.0, 0.0, 0.005, 0.02]),
        slow=rng.choice([0.0, 0.0, 0.03]),
        visibility=rng.choice([2160.0, 2160.0, 30.0, 75.0]),
        clock_spread=rng.choice([0.0, 5.0]),
        coalesce=rng.random() < 0.7,
        containers=rng.choice([1, 2, 3]),
    )
    world = _People(rng)
    household = "+1212555" + f"{rng.randrange(10000):04d}"
    tag = f"s{seed}"
    for n in range(rng.randint(3, 6)):
        kind = rng.choices(
            ["email", "email_phone", "household", "placeholder", "email_ref", "ref", "phone"],
            weights=[3, 3, 2, 1, 2, 1, 1],
        )[0]
        email = f"{tag}-p{n}@example.com"
        if kind == "email":
            world.person(email=email)
        elif kind == "email_phone":
            world.person(email=email, phone=f"+1303555{rng.randrange(10000):04d}")
        elif kind == "household":
            world.person(email=email, phone=household)
        elif kind == "placeholder":
            world.person(email=email, phone=PLACEHOLDER_PHONE)
        elif kind == "email_ref":
            world.person(email=email, reference=f"crm-{tag}-{n}")
        elif kind == "ref":
            world.person(reference=f"crm-{tag}-{n}")
        else:
            world.person(phone=f"+1415555{rng.randrange(10000):04d}")
    # Consent's own draws (bounces, evidence) come from a generator of their own: the rest of
    # the scenario is what the seed drew before they were added.
    consent = random.Random(f"consent-{seed}")
    existing = [p for p in world.people if rng.random() < 0.2]
    for n, person in enumerate(existing):
        if person.email and consent.random() < 0.3:  # an address that bounced: no consent applies
            bounced = replace(person, bounced=True)
            existing[n] = bounced
            world.people[world.people.index(person)] = bounced
    people = world.people
    leads: list[Lead] = []
    paths = list(PATHS)
    weights = list(PATHS.values())
    for _ in range(rng.randint(4, 9)):
        person = rng.choice(people)
        path = rng.choices(paths, weights)[0]
        at = rng.uniform(0.0, 20.0)
        action = rng.choices(ACTIONS, list(ACTION_WEIGHTS.values()))[0]
        if path == "queue_batch":
            # A burst: this lead and new people's leads, enough for one coalesced batch.
            for _ in range(rng.randint(9, 11)):
                other = world.person(email=f"{tag}-n{len(world.people)}@example.com")
                leads.append(
                    _evidenced(consent, _lead(rng, len(leads) + 1, other, action, "queue", at))
                )
            leads.append(
                _evidenced(consent, _lead(rng, len(leads) + 1, person, action, "queue", at))
            )
            continue
        if path == "lead_file":
            # One file: rows of new people and of the world's (the same person twice, too).
            for _ in range(rng.randint(2, 14)):
                if rng.random() < 0.5:
                    other = rng.choice(people)
                else:
                    other = world.person(email=f"{tag}-n{len(world.people)}@example.com")
                row = _lead(rng, len(leads) + 1, other, action, path, at)
                leads.append(_evidenced(consent, row))
        first = _evidenced(consent, _lead(rng, len(leads) + 1, person, action, path, at))
        leads.append(first)
        if rng.random() < 0.35:  # the vendor sends it again, maybe by another way
            again = rng.choices(paths[:-1], weights[:-1])[0]
            again = "queue" if again == "queue_batch" else again
            later = at + rng.choice([0.0, 0.5, 2.0, 8.0, 30.0])
            resent = _lead(rng, len(leads) + 1, person, action, again, later)
            # The same lead: the same consent evidence (its certificate, its LeadiD).
            resent.fields.update({k: v for k, v in first.fields.items() if k in EVIDENCE_KEYS})
            leads.append(resent)
    return Scenario(seed, world.people, leads, existing, behaviour)


def _lead(
    rng: random.Random, number: int, person: Person, action: str, path: str, at: float
) -> Lead:
    """A lead for the person: its identifiers, or some (a form may leave out the phone, a CRM
    send carry only the reference), an email in any case."""
    fields: dict[str, Any] = {"first_name": f"Lead {number}"}
    carried = [name for name in ("email", "phone", "reference") if getattr(person, name)]
    if len(carried) > 1 and rng.random() < 0.4:
        # Some of them, always with the one every lead of the person shares (its reference,
        # else its email): leads that share nothing are two people to anyone.
        anchor = "reference" if person.reference else carried[0]
        others = [name for name in carried if name != anchor]
        carried = [anchor, *rng.sample(others, rng.randint(0, len(others) - 1))]
    if "email" in carried:
        email = str(person.email)
        fields["email"] = email.upper() if rng.random() < 0.15 else email
    if "phone" in carried:
        fields["phone_1"] = person.phone
    if "reference" in carried:
        fields["reference"] = person.reference
    fields.update(_SETTINGS.get(action, {}))
    if action == "track_event" and rng.random() < 0.5:
        fields["klaviyo.unique_id"] = f"event-{person.name}-{number}"
    return Lead(number, person, action, path, fields, at)


def _evidenced(rng: random.Random, lead: Lead) -> Lead:
    """A subscribe's lead, most often with the consent evidence its form captured."""
    if lead.action == "subscribe_profile_to_list" and rng.random() < 0.6:
        lead.fields.update(_evidence(rng))
    return lead


EVIDENCE_KEYS = ("trustedform_cert_url", "leadid_token", "consent_timestamp", "ip_address")


def _evidence(rng: random.Random) -> dict[str, str]:
    """The consent evidence a form's lead carries: its own certificate and LeadiD."""
    certificate = "".join(rng.choice("0123456789abcdef") for _ in range(40))
    token = "-".join(
        "".join(rng.choice("0123456789ABCDEF") for _ in range(n)) for n in (8, 4, 4, 4, 12)
    )
    return {
        "trustedform_cert_url": f"https://cert.trustedform.com/{certificate}",
        "leadid_token": token,
        "consent_timestamp": "2026-01-05T10:00:00Z",
        "ip_address": f"203.0.113.{rng.randrange(1, 255)}",
    }
