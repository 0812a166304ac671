#!/usr/bin/env python3
"""
gen_records.py - deterministic generator of realistic Sequin records, for tests and benchmarks.

Records follow the documented shape (section 3 of the consumer API notes, and the hand-made
samples in test/fixtures/sample_records.json): standard fields (`id`, `upstream_id`,
`collection_id`, `provider`, `stream_id`, `sync{id, external_id, metadata}`, `deleted`,
`updated_idx`, `upstream_created_at`, `upstream_updated_at`, `inserted_at`) and the API object
under `data`, as the provider returns it:

  stripe:customer      epoch `created`, integer minor-unit `balance`, `metadata` object, arrays
  stripe:subscription  nested `plan` and `items` objects, status moving trialing->active->...
  salesforce:contact   PascalCase fields, a 20-digit AnnualRevenue__c, a decimal Score__c
  hubspot:deal         `properties` with string amounts

A fraction of ids (--slug-fraction) uses the other documented spelling: `collection_slug`
instead of `collection_id` and a flat `sync_id` instead of the `sync` object.

Each of N ids (UUIDs drawn from the seed) gets 1..K versions with strictly increasing
`updated_idx`; for a fraction F of ids the last version is `deleted: true`.  Without --shuffle
the records come in stream order (updated_idx ascending across all ids); with --shuffle all
versions are shuffled, i.e. out-of-order delivery.  Same arguments, same bytes.

CLI:
    python3 test/gen_records.py --collection stripe:customer --count 1000 --versions 3 \
        --delete-fraction 0.1 --seed 7 --shuffle [--out FILE]
    (--collection takes a comma-separated list, ids are spread over them round-robin)

Library:
    from gen_records import generate, newest_by_id, dumps
    recs = generate("stripe:customer", count=100, versions=3, seed=1, shuffle=True)
    expected = newest_by_id(recs)          # {id: newest record}: the expected final table
"""

import argparse
import datetime as dt
import json
import random
import sys
import uuid

BASE_TIME = dt.datetime(2024, 11, 10, 12, 0, 0, tzinfo=dt.timezone.utc)
SPAN_SECONDS = 30 * 24 * 3600          # versions are spread over 30 days
BASE_IDX = 2745000000                  # updated_idx values look like the samples'
IDX_SPAN = 10**9                       # updated_idx = BASE_IDX + t * IDX_SPAN, t in [0, 1)

FIRST_NAMES = ["Paul", "Chani", "Leto", "Jessica", "Duncan", "Gurney", "Irulan", "Stilgar",
               "José", "Zoë", "Björk", "Nguyễn", "Øyvind", "Åsa", "Ілля", "李", "Ώρα", "Amélie",
               "O'Brien", "Ana María"]
LAST_NAMES = ["Atreides", "Kynes", "Harkonnen", "Idaho", "Halleck", "Corrino", "Núñez",
              "Müller", "Søren", "Đặng", "Коваленко", "王", "Smith-Jones", "d'Arcy", "🙂 Emoji"]
CITIES = [("Arrakeen", "Arrakis"), ("Paris", "FR"), ("Berlin", "DE"), ("São Paulo", "BR"),
          ("Kyiv", "UA"), ("東京", "JP"), ("Reykjavík", "IS"), ("New York", "US")]
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _b62(rng, n):
    return "".join(rng.choices(B62, k=n))


def _iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# --------------------------------------------------------------------------------------------
# Per-collection API objects: new_* builds version 1, update_* mutates it for later versions.
# --------------------------------------------------------------------------------------------

def new_stripe_customer(rng, created):
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    cid = "cus_" + _b62(rng, 14)
    city = rng.choice(CITIES)
    return cid, {
        "id": cid,
        "object": "customer",
        "address": None if rng.random() < 0.5 else {
            "city": city[0], "country": city[1], "line1": f"{rng.randint(1, 999)} Main St",
            "line2": None, "postal_code": f"{rng.randint(10000, 99999)}", "state": None},
        "balance": rng.choice([0, 0, -1250, 500, rng.randint(-10**6, 10**6)]),
        "created": created,
        "currency": rng.choice(["usd", "eur", "gbp"]),
        "default_source": None,
        "delinquent": False,
        "description": rng.choice([None, "Fremen liaison", "VIP – priority", "test customer"]),
        "email": f"{first.lower().replace(' ', '.')}.{rng.randint(1, 9999)}@example.com",
        "invoice_prefix": _b62(rng, 8).upper(),
        "livemode": False,
        "metadata": {"tier": rng.choice(["gold", "silver", "bronze"]),
                     "sietch": rng.choice(["tabr", "jacurutu", "none"])},
        "name": f"{first} {last}",
        "phone": None if rng.random() < 0.4 else f"+1 415 555 {rng.randint(0, 9999):04d}",
        "preferred_locales": rng.sample(["en", "fr", "de", "es", "ja"], rng.randint(0, 2)),
        "tax_exempt": "none",
        "test_clock": None,
    }


def update_stripe_customer(rng, d, v):
    d["balance"] = rng.randint(-10**6, 10**6)
    d["email"] = f"v{v}.{d['email'].split('.', 1)[-1]}" if rng.random() < 0.5 else d["email"]
    d["delinquent"] = rng.random() < 0.1
    d["metadata"] = dict(d["metadata"], last_update=str(v))
    if rng.random() < 0.3:
        d["name"] = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def new_stripe_subscription(rng, created):
    sid = "sub_" + _b62(rng, 14)
    amount = rng.choice([499, 999, 4900, 19900])
    interval = rng.choice(["month", "year"])
    qty = rng.randint(1, 5)
    price = {"id": "price_" + _b62(rng, 14), "unit_amount": amount, "currency": "usd",
             "recurring": {"interval": interval, "interval_count": 1}}
    period = 30 * 86400 if interval == "month" else 365 * 86400
    return sid, {
        "id": sid,
        "object": "subscription",
        "billing_cycle_anchor": created + 3600,
        "cancel_at_period_end": False,
        "collection_method": "charge_automatically",
        "created": created,
        "current_period_end": created + period,
        "current_period_start": created,
        "customer": "cus_" + _b62(rng, 14),
        "items": {"object": "list",
                  "data": [{"id": "si_" + _b62(rng, 10), "price": price, "quantity": qty}]},
        "plan": {"id": price["id"], "amount": amount, "currency": "usd", "interval": interval},
        "quantity": qty,
        "status": "trialing" if rng.random() < 0.3 else "active",
        "trial_end": None,
        "metadata": {},
    }


SUB_NEXT = {"trialing": ["active"], "active": ["active", "past_due", "canceled"],
            "past_due": ["active", "canceled", "unpaid"], "unpaid": ["canceled"],
            "canceled": ["canceled"]}


def update_stripe_subscription(rng, d, v):
    d["status"] = rng.choice(SUB_NEXT[d["status"]])
    d["quantity"] = rng.randint(1, 5)
    d["items"]["data"][0]["quantity"] = d["quantity"]
    if rng.random() < 0.3:
        d["plan"]["amount"] = d["items"]["data"][0]["price"]["unit_amount"] = \
            rng.choice([499, 999, 4900, 19900])
    d["cancel_at_period_end"] = d["status"] == "canceled"


def new_salesforce_contact(rng, created):
    cid = "0035e" + _b62(rng, 13)
    city = rng.choice(CITIES)
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    created_dt = dt.datetime.fromtimestamp(created, dt.timezone.utc)
    return cid, {
        "Id": cid,
        "attributes": {"type": "Contact",
                       "url": f"/services/data/v59.0/sobjects/Contact/{cid}"},
        "FirstName": first,
        "LastName": last,
        "Email": f"{last.lower().replace(' ', '')}@caladan.example",
        "Phone": rng.choice([None, "+1 415 555 0100", "+44 20 7946 0958"]),
        "AccountId": "0015e" + _b62(rng, 13),
        "Title": rng.choice(["Duke", "CEO", "Engineer", None]),
        "LeadSource": rng.choice(["Web", "Phone Inquiry", "Partner Referral", None]),
        "Birthdate": None if rng.random() < 0.3 else
        f"{rng.randint(1950, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "HasOptedOutOfEmail": rng.random() < 0.2,
        "MailingAddress": {"city": city[0], "country": city[1]},
        "CreatedDate": created_dt.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
        "LastModifiedDate": created_dt.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
        # 20 digits: above the int64 and uint64 ranges, must reach numeric intact.
        "AnnualRevenue__c": rng.randrange(10**19, 10**20),
        "Score__c": round(rng.uniform(0, 100), 3),
    }


def update_salesforce_contact(rng, d, v):
    d["Title"] = rng.choice(["Duke", "Emperor", "CTO", "Engineer", None])
    d["Score__c"] = round(rng.uniform(0, 100), 3)
    d["AnnualRevenue__c"] = rng.randrange(10**19, 10**20)
    d["HasOptedOutOfEmail"] = rng.random() < 0.2


def new_hubspot_deal(rng, created):
    did = str(rng.randrange(10**9, 10**11))
    created_iso = _iso(dt.datetime.fromtimestamp(created, dt.timezone.utc))
    return did, {
        "id": did,
        "properties": {
            "dealname": rng.choice(["Spice contract", "Stillsuit order", "Ornithopter lease",
                                    "Contrat épice", "香料契約"]),
            "amount": f"{rng.randint(100, 5_000_000)}.{rng.randint(0, 99):02d}",
            "dealstage": "appointmentscheduled",
            "closedate": None,
            "pipeline": "default",
            "hs_object_id": did,
        },
        "createdAt": created_iso,
        "updatedAt": created_iso,
        "archived": False,
    }


DEAL_STAGES = ["appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
               "decisionmakerboughtin", "contractsent", "closedwon", "closedlost"]


def update_hubspot_deal(rng, d, v):
    p = d["properties"]
    i = DEAL_STAGES.index(p["dealstage"])
    p["dealstage"] = DEAL_STAGES[min(i + rng.randint(0, 2), len(DEAL_STAGES) - 1)]
    p["amount"] = f"{rng.randint(100, 5_000_000)}.{rng.randint(0, 99):02d}"
    if p["dealstage"].startswith("closed"):
        p["closedate"] = "2024-12-31T00:00:00Z"
    if rng.random() < 0.2:
        p.pop("pipeline", None)              # absent keys happen


COLLECTIONS = {
    "stripe:customer": (new_stripe_customer, update_stripe_customer),
    "stripe:subscription": (new_stripe_subscription, update_stripe_subscription),
    "salesforce:contact": (new_salesforce_contact, update_salesforce_contact),
    "hubspot:deal": (new_hubspot_deal, update_hubspot_deal),
}


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------

def generate(collection="stripe:customer", count=100, versions=1, delete_fraction=0.0, seed=0,
             shuffle=False, slug_fraction=0.0, nul_fraction=0.0):
    """Return a list of record dicts (see the module docstring).

    collection     a collection id or a list / comma-separated string of them (round-robin)
    count          number of distinct record ids
    versions       each id gets 1..versions versions (drawn from the seed)
    delete_fraction  round(count * F) ids end with a `deleted: true` version
    shuffle        shuffle all versions (out-of-order delivery); else updated_idx order
    slug_fraction  round(count * F) ids use `collection_slug` + flat `sync_id`
    nul_fraction   this fraction of versions gets a string holding "\\u0000" (valid JSON, not a
                   valid Postgres text value), in data.description / data.Title / dealname
    """
    return [json.loads(line) for line in generate_lines(
        collection, count, versions, delete_fraction, seed, shuffle, slug_fraction, nul_fraction)]


def generate_lines(collection="stripe:customer", count=100, versions=1, delete_fraction=0.0,
                   seed=0, shuffle=False, slug_fraction=0.0, nul_fraction=0.0):
    """Like generate(), but each record as compact JSON text: what the CLI writes.  Records are
    serialised as soon as they are built, so a million of them cost their text and no more."""
    if isinstance(collection, str):
        collection = [c.strip() for c in collection.split(",") if c.strip()]
    for c in collection:
        if c not in COLLECTIONS:
            raise ValueError(f"unknown collection {c!r}; known: {', '.join(COLLECTIONS)}")
    if not collection or count < 0 or versions < 1:
        raise ValueError("need a collection, count >= 0 and versions >= 1")
    rng = random.Random(seed)
    stream_id = _uuid(rng)
    syncs = [{"id": _uuid(rng), "external_id": f"org_{rng.randint(1, 999)}",
              "metadata": {"plan": rng.choice(["pro", "free"]), "region": rng.choice(["eu", "us"])}}
             for _ in range(3)]
    deleted_ids = set(rng.sample(range(count), round(count * delete_fraction)))
    slug_ids = set(rng.sample(range(count), round(count * slug_fraction)))
    dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    # Each version gets a time t in [0, 1) within the 30-day span; updated_idx is derived from t,
    # so sorting by updated_idx gives the stream order across ids, and within one id the
    # sorted times give increasing updated_idx (forced strictly increasing below).
    lines = []             # (updated_idx, id index, version index, JSON text)
    for i in range(count):
        coll = collection[i % len(collection)]
        new, update = COLLECTIONS[coll]
        k = rng.randint(1, versions)
        times = sorted(rng.random() for _ in range(k))
        created_at = BASE_TIME + dt.timedelta(seconds=times[0] * SPAN_SECONDS
                                              - rng.randint(60, 86400 * 365))
        upstream_id, data = new(rng, int(created_at.timestamp()))
        sync = rng.choice(syncs)
        rid = _uuid(rng)
        slug = i in slug_ids
        provider = coll.split(":", 1)[0]
        idx = 0
        for v in range(k):
            if v:
                update(rng, data, v)
            idx = max(BASE_IDX + int(times[v] * IDX_SPAN), idx + 1)
            updated_at = BASE_TIME + dt.timedelta(seconds=times[v] * SPAN_SECONDS)
            if coll == "hubspot:deal":
                data["updatedAt"] = _iso(updated_at)
            elif coll == "salesforce:contact":
                data["LastModifiedDate"] = updated_at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
            rec = {"id": rid, "upstream_id": upstream_id}
            if not slug:
                rec["collection_id"] = coll
            rec["provider"] = provider
            rec["stream_id"] = stream_id
            if not slug:
                rec["sync"] = sync
            rec["deleted"] = v == k - 1 and i in deleted_ids
            rec["updated_idx"] = idx
            rec["upstream_created_at"] = _iso(created_at)
            rec["upstream_updated_at"] = _iso(updated_at)
            rec["inserted_at"] = _iso(updated_at
                                      + dt.timedelta(milliseconds=rng.randint(50, 5000)))
            rec["data"] = data
            if nul_fraction and rng.random() < nul_fraction:
                rec["data"] = _poison(json.loads(json.dumps(data)))   # a copy: data lives on
            if slug:
                rec["collection_slug"] = coll
                rec["sync_id"] = sync["id"]
            lines.append((idx, i, v, dump(rec)))

    lines.sort()
    out = [line[3] for line in lines]
    if shuffle:
        rng.shuffle(out)
    return out


def _poison(data):
    for key in ("description", "Title"):
        if key in data:
            data[key] = "bad\u0000byte"
            return data
    if "properties" in data:
        data["properties"]["dealname"] = "bad\u0000byte"
    return data


def newest_by_id(records):
    """The expected final state: {id: the record with the highest updated_idx for that id}.
    Deleted records are included (soft delete keeps them); filter on r["deleted"] for hard
    delete."""
    out = {}
    for r in records:
        cur = out.get(r["id"])
        if cur is None or r["updated_idx"] > cur["updated_idx"]:
            out[r["id"]] = r
    return out


def collection_of(record):
    """The record's collection, whichever of the two documented spellings it uses."""
    return record.get("collection_id") or record.get("collection_slug")


def dumps(records):
    """A JSON array with one compact record per line (UTF-8 text, non-ASCII kept as is)."""
    return _join([json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records])


def _join(lines):
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


def write_array(lines, f):
    """Write JSON texts as one JSON array, one per line, to a binary file."""
    if not lines:
        f.write(b"[]\n")
        return
    f.write(b"[\n")
    last = len(lines) - 1
    for n, line in enumerate(lines):
        f.write(line.encode("utf-8"))
        f.write(b",\n" if n != last else b"\n]\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Generate realistic Sequin records (JSON array).")
    ap.add_argument("--collection", default="stripe:customer",
                    help="collection id(s), comma-separated: " + ", ".join(COLLECTIONS))
    ap.add_argument("--count", type=int, default=100, help="distinct record ids")
    ap.add_argument("--versions", type=int, default=1, help="up to this many versions per id")
    ap.add_argument("--delete-fraction", type=float, default=0.0,
                    help="fraction of ids whose last version is deleted: true")
    ap.add_argument("--slug-fraction", type=float, default=0.0,
                    help="fraction of ids using collection_slug and a flat sync_id")
    ap.add_argument("--nul-fraction", type=float, default=0.0,
                    help='fraction of versions with a "\\u0000" string in data')
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shuffle", action="store_true", help="shuffle all versions")
    ap.add_argument("--out", help="write here instead of stdout")
    args = ap.parse_args(argv)
    try:
        lines = generate_lines(args.collection, args.count, args.versions,
                               args.delete_fraction, args.seed, args.shuffle,
                               args.slug_fraction, args.nul_fraction)
    except ValueError as e:
        ap.error(str(e))
    # Written line by line: one giant string of 100k records would cost seconds in page faults.
    out = open(args.out, "wb") if args.out else sys.stdout.buffer
    try:
        write_array(lines, out)
    finally:
        if args.out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
