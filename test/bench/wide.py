"""
wide.py - the benchmark's wide records: Salesforce-like accounts of 120 fields, 4-8 KB each.

A record's `data` is an Account as Salesforce's REST API returns it: PascalCase standard fields
(`AnnualRevenue`, `BillingPostalCode`, `CreatedDate` as "2024-03-05T14:22:10.000+0000"),
custom fields with `__c` (`Customer_Priority__c`), nested objects (`attributes`,
`BillingAddress`, `Owner`), arrays, booleans, numbers and nulls, and three long free-text fields.
60 of the 120 fields have a snake_case column in the target table (six types: text, integer,
numeric, boolean, timestamptz, jsonb); the extension finds them by name, ignoring case and
underscores (README, "How records map to columns"), e.g. `Customer_Priority__c` fills
`customer_priority_c`.  The other 60 fields only live in the whole `data` object (jsonb).

Like the narrow workload, N records = N/2 ids x 2 versions: every id inserted, then updated
(LastModifiedDate, SystemModstamp, revenue, counters, ratings, usage change).  Deterministic
(seeded), standard library only.
"""

import datetime as dt
import json
import random
import uuid

from stream import Record, two_versions

COLLECTION = "salesforce:account"
BASE_TIME = dt.datetime(2024, 11, 10, 12, 0, 0, tzinfo=dt.timezone.utc)
BASE_IDX = 2745000000

# (column, field, SQL type) of the 60 mapped fields, in the table's order.
MAPPED = [
    ("name", "Name", "text"),
    ("account_number", "AccountNumber", "text"),
    ("type", "Type", "text"),
    ("industry", "Industry", "text"),
    ("rating", "Rating", "text"),
    ("ownership", "Ownership", "text"),
    ("phone", "Phone", "text"),
    ("website", "Website", "text"),
    ("ticker_symbol", "TickerSymbol", "text"),
    ("account_source", "AccountSource", "text"),
    ("billing_street", "BillingStreet", "text"),
    ("billing_city", "BillingCity", "text"),
    ("billing_state", "BillingState", "text"),
    ("billing_postal_code", "BillingPostalCode", "text"),
    ("billing_country", "BillingCountry", "text"),
    ("shipping_city", "ShippingCity", "text"),
    ("shipping_country", "ShippingCountry", "text"),
    ("description", "Description", "text"),
    ("currency_iso_code", "CurrencyIsoCode", "text"),
    ("owner_id", "OwnerId", "text"),
    ("parent_id", "ParentId", "text"),
    ("record_type_id", "RecordTypeId", "text"),
    ("customer_priority_c", "Customer_Priority__c", "text"),
    ("sla_c", "SLA__c", "text"),
    ("number_of_employees", "NumberOfEmployees", "integer"),
    ("numberof_locations_c", "NumberofLocations__c", "integer"),
    ("open_cases_c", "Open_Cases__c", "integer"),
    ("won_opportunities_c", "Won_Opportunities__c", "integer"),
    ("support_tier_c", "Support_Tier__c", "integer"),
    ("health_score_c", "Health_Score__c", "integer"),
    ("annual_revenue", "AnnualRevenue", "numeric"),
    ("billing_latitude", "BillingLatitude", "numeric"),
    ("billing_longitude", "BillingLongitude", "numeric"),
    ("shipping_latitude", "ShippingLatitude", "numeric"),
    ("shipping_longitude", "ShippingLongitude", "numeric"),
    ("credit_limit_c", "Credit_Limit__c", "numeric"),
    ("lifetime_value_c", "Lifetime_Value__c", "numeric"),
    ("discount_rate_c", "Discount_Rate__c", "numeric"),
    ("is_deleted", "IsDeleted", "boolean"),
    ("is_partner", "IsPartner", "boolean"),
    ("is_customer_portal", "IsCustomerPortal", "boolean"),
    ("active_c", "Active__c", "boolean"),
    ("has_open_opportunities_c", "Has_Open_Opportunities__c", "boolean"),
    ("do_not_call_c", "Do_Not_Call__c", "boolean"),
    ("is_strategic_c", "Is_Strategic__c", "boolean"),
    ("gdpr_consent_c", "Gdpr_Consent__c", "boolean"),
    ("created_date", "CreatedDate", "timestamptz"),
    ("last_modified_date", "LastModifiedDate", "timestamptz"),
    ("system_modstamp", "SystemModstamp", "timestamptz"),
    ("last_viewed_date", "LastViewedDate", "timestamptz"),
    ("last_referenced_date", "LastReferencedDate", "timestamptz"),
    ("last_activity_at_c", "Last_Activity_At__c", "timestamptz"),
    ("contract_start_c", "Contract_Start__c", "timestamptz"),
    ("renewal_at_c", "Renewal_At__c", "timestamptz"),
    ("attributes", "attributes", "jsonb"),
    ("billing_address", "BillingAddress", "jsonb"),
    ("shipping_address", "ShippingAddress", "jsonb"),
    ("owner", "Owner", "jsonb"),
    ("tags_c", "Tags__c", "jsonb"),
    ("custom_settings_c", "Custom_Settings__c", "jsonb"),
]

# The table: the standard fields the extension maps by name, the 60 mapped fields, `data`.
STANDARD = [("id", "text PRIMARY KEY"), ("upstream_id", "text"), ("deleted", "boolean"),
            ("updated_idx", "bigint")]
COLUMNS = [c for c, _ in STANDARD] + [c for c, _, _ in MAPPED] + ["data"]

TABLE_DDL = "CREATE TABLE {name} (\n    " + ",\n    ".join(
    ["%s %s" % s for s in STANDARD] + ["%s %s" % (c, t) for c, _, t in MAPPED] + ["data jsonb"]) + "\n)"

# The ceiling's expressions, one per column, over r (the record) and d (its data object).
_CAST = {"integer": "::integer", "numeric": "::numeric", "boolean": "::boolean", "timestamptz": "::timestamptz"}


def _expr(field, typ):
    if typ == "jsonb":
        # A JSON null is SQL NULL in every column (as the extension stores it).
        return "NULLIF(d->'%s', 'null'::jsonb)" % field
    if typ == "text":
        return "d->>'%s'" % field
    return "(d->>'%s')%s" % (field, _CAST[typ])


SELECT_EXPRS = (["r->>'id'", "r->>'upstream_id'", "(r->>'deleted')::boolean", "(r->>'updated_idx')::bigint"]
                + [_expr(f, t) for _, f, t in MAPPED] + ["d"])
# d is computed once per record: a function in FROM is not inlined into the 60 expressions.
FROM_CLAUSE = "jsonb_array_elements(%s::jsonb) AS r, jsonb_extract_path(r, 'data') AS d"

_EXT_CAST = {"text": "", "integer": "::integer", "numeric": "::numeric", "boolean": "::boolean",
             "timestamptz": "::timestamptz", "jsonb": "::jsonb"}
EXT_TEMPLATE = "(%s, %s, %s, %s, " + ", ".join("%%s%s" % _EXT_CAST[t] for _, _, t in MAPPED) + ", %s::jsonb)"


def ext_row(rec, Json):
    """The external worker's row: the user's code knows the field of each column."""
    d = rec.get("data") or {}
    vals = [rec["id"], rec.get("upstream_id"), rec.get("deleted", False), rec["updated_idx"]]
    for _, field, typ in MAPPED:
        v = d.get(field)
        vals.append(Json(v) if typ == "jsonb" and v is not None else v)
    vals.append(Json(d))
    return tuple(vals)


# ------------------------------------------------------------------------------------------
# the generator
# ------------------------------------------------------------------------------------------

WORDS = ("account strategic renewal expansion pipeline quarterly review executive sponsor "
         "integration rollout region partner onboarding support escalation contract pricing "
         "discount usage adoption forecast budget procurement security compliance audit legal "
         "invoice billing migration platform analytics dashboard workflow automation milestone "
         "stakeholder champion objection competitor evaluation pilot success health churn risk "
         "upsell cross-sell territory segment enterprise midmarket logistics manufacturing "
         "retail healthcare finance spice harvest caladan arrakis sietch ornithopter stillsuit "
         "guild navigator melange landsraad ixian tleilaxu chapterhouse").split()
NAMES = ["Atreides Holdings", "Harkonnen Industries", "Ixian Machines", "Spacing Guild Logistics",
         "Caladan Fisheries", "Richese Technologies", "Tleilax Biotech", "Giedi Prime Metals",
         "Chusuk Instruments", "Ecaz Timber", "Kaitain Imperial Supply", "Salusa Secundus Defence",
         "Société Épice", "Müller & Söhne", "東京 Trading", "Ὀρφεύς Analytics", "Ørsted Energi",
         "São Paulo Agro", "Київ Software", "O'Brien Partners"]
CITIES = [("Arrakeen", "Arrakis", "AR", 24.5, 45.1), ("Paris", "France", "IDF", 48.8566, 2.3522),
          ("Berlin", "Germany", "BE", 52.52, 13.405), ("São Paulo", "Brazil", "SP", -23.5505, -46.6333),
          ("Kyiv", "Ukraine", "KY", 50.4501, 30.5234), ("東京", "Japan", "13", 35.6762, 139.6503),
          ("Reykjavík", "Iceland", "RE", 64.1466, -21.9426), ("New York", "United States", "NY", 40.7128, -74.006),
          ("San Francisco", "United States", "CA", 37.7749, -122.4194), ("London", "United Kingdom", "LND", 51.5074, -0.1278)]
INDUSTRIES = ["Agriculture", "Banking", "Biotechnology", "Energy", "Engineering", "Finance", "Healthcare",
              "Manufacturing", "Media", "Retail", "Technology", "Transportation"]
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _sfid(rng, prefix):
    return prefix + "".join(rng.choices(B62, k=15))


def _sfts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _text(rng, lo, hi):
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi) // 9 + 1)).capitalize() + "."


def _address(rng, city):
    return {"street": "%d %s Street" % (rng.randint(1, 9999), rng.choice(WORDS).capitalize()),
            "city": city[0], "state": city[2], "postalCode": "%05d" % rng.randint(1000, 99999),
            "country": city[1], "latitude": city[3], "longitude": city[4],
            "geocodeAccuracy": rng.choice(["Address", "Street", "Zip", None])}


def new_account(rng, created):
    """Version 1 of an account: (Salesforce Id, data)."""
    sid = _sfid(rng, "001")
    bill = rng.choice(CITIES)
    ship = bill if rng.random() < 0.7 else rng.choice(CITIES)
    owner = _sfid(rng, "005")
    created_s = _sfts(created)
    lat = round(bill[3] + rng.uniform(-0.05, 0.05), 6)
    lon = round(bill[4] + rng.uniform(-0.05, 0.05), 6)
    d = {
        "attributes": {"type": "Account", "url": "/services/data/v59.0/sobjects/Account/" + sid},
        "Id": sid,
        "IsDeleted": False,
        "MasterRecordId": None,
        "Name": "%s %d" % (rng.choice(NAMES), rng.randint(1, 999)),
        "Type": rng.choice(["Customer - Direct", "Customer - Channel", "Prospect", "Partner", "Other"]),
        "RecordTypeId": rng.choice(["0125e000000AbCdAAK", "0125e000000AbCeAAK"]),
        "ParentId": None if rng.random() < 0.7 else _sfid(rng, "001"),
        "BillingStreet": "%d %s Avenue" % (rng.randint(1, 9999), rng.choice(WORDS).capitalize()),
        "BillingCity": bill[0],
        "BillingState": bill[2],
        "BillingPostalCode": "%05d" % rng.randint(1000, 99999),
        "BillingCountry": bill[1],
        "BillingLatitude": lat,
        "BillingLongitude": lon,
        "BillingGeocodeAccuracy": rng.choice(["Address", "Street", None]),
        "BillingAddress": _address(rng, bill),
        "ShippingStreet": "%d %s Road" % (rng.randint(1, 9999), rng.choice(WORDS).capitalize()),
        "ShippingCity": ship[0],
        "ShippingState": ship[2],
        "ShippingPostalCode": "%05d" % rng.randint(1000, 99999),
        "ShippingCountry": ship[1],
        "ShippingLatitude": round(ship[3] + rng.uniform(-0.05, 0.05), 6),
        "ShippingLongitude": round(ship[4] + rng.uniform(-0.05, 0.05), 6),
        "ShippingGeocodeAccuracy": None,
        "ShippingAddress": _address(rng, ship),
        "Phone": "+1 415 555 %04d" % rng.randint(0, 9999),
        "Fax": None if rng.random() < 0.8 else "+1 415 555 %04d" % rng.randint(0, 9999),
        "AccountNumber": "CD%06d" % rng.randint(0, 999999),
        "Website": "https://www.%s.example" % rng.choice(WORDS),
        "PhotoUrl": "/services/images/photo/" + sid,
        "Sic": str(rng.randint(1000, 9999)),
        "Industry": rng.choice(INDUSTRIES),
        "AnnualRevenue": round(rng.uniform(1e5, 5e9), 2),
        "NumberOfEmployees": rng.randint(1, 250000),
        "Ownership": rng.choice(["Public", "Private", "Subsidiary", "Other"]),
        "TickerSymbol": None if rng.random() < 0.6 else "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=4)),
        "Description": _text(rng, 100, 1200),
        "Rating": rng.choice(["Hot", "Warm", "Cold"]),
        "Site": rng.choice([None, "Headquarters", "Branch"]),
        "CurrencyIsoCode": rng.choice(["USD", "EUR", "GBP", "JPY"]),
        "OwnerId": owner,
        "Owner": {"attributes": {"type": "User", "url": "/services/data/v59.0/sobjects/User/" + owner},
                  "Id": owner, "Name": rng.choice(NAMES).split()[0] + " Rep", "Email": "rep%d@example.com" % rng.randint(1, 500)},
        "CreatedDate": created_s,
        "CreatedById": _sfid(rng, "005"),
        "LastModifiedDate": created_s,
        "LastModifiedById": _sfid(rng, "005"),
        "SystemModstamp": created_s,
        "LastActivityDate": None if rng.random() < 0.3 else created.date().isoformat(),
        "LastViewedDate": None if rng.random() < 0.3 else _sfts(created + dt.timedelta(hours=rng.randint(1, 500))),
        "LastReferencedDate": None if rng.random() < 0.3 else _sfts(created + dt.timedelta(hours=rng.randint(1, 500))),
        "Jigsaw": None,
        "JigsawCompanyId": None,
        "CleanStatus": rng.choice(["Pending", "Matched", "Different", "NotFound"]),
        "AccountSource": rng.choice(["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"]),
        "DunsNumber": "%09d" % rng.randint(0, 999999999),
        "Tradestyle": None,
        "NaicsCode": str(rng.randint(100000, 999999)),
        "NaicsDesc": _text(rng, 20, 60),
        "YearStarted": str(rng.randint(1900, 2023)),
        "SicDesc": _text(rng, 15, 40),
        "DandbCompanyId": None,
        "OperatingHoursId": None,
        "IsPartner": rng.random() < 0.2,
        "IsCustomerPortal": rng.random() < 0.3,
        "Customer_Priority__c": rng.choice(["High", "Medium", "Low"]),
        "SLA__c": rng.choice(["Gold", "Silver", "Bronze", "Platinum"]),
        "SLAExpirationDate__c": (created + dt.timedelta(days=rng.randint(30, 900))).date().isoformat(),
        "SLASerialNumber__c": str(rng.randint(100, 9999)),
        "NumberofLocations__c": rng.randint(1, 500),
        "UpsellOpportunity__c": rng.choice(["Maybe", "No", "Yes"]),
        "Active__c": rng.choice(["Yes", "No"]) == "Yes",
        "Open_Cases__c": rng.randint(0, 80),
        "Won_Opportunities__c": rng.randint(0, 200),
        "Support_Tier__c": rng.randint(1, 4),
        "Health_Score__c": rng.randint(0, 100),
        "Credit_Limit__c": round(rng.uniform(1000, 5e6), 2),
        "Lifetime_Value__c": round(rng.uniform(0, 2e7), 2),
        "Discount_Rate__c": round(rng.uniform(0, 0.35), 4),
        "Has_Open_Opportunities__c": rng.random() < 0.5,
        "Do_Not_Call__c": rng.random() < 0.1,
        "Is_Strategic__c": rng.random() < 0.15,
        "Gdpr_Consent__c": rng.random() < 0.6,
        "Last_Activity_At__c": _sfts(created + dt.timedelta(minutes=rng.randint(1, 90000))),
        "Contract_Start__c": _sfts(created + dt.timedelta(days=rng.randint(0, 60))),
        "Renewal_At__c": None if rng.random() < 0.2 else _sfts(created + dt.timedelta(days=rng.randint(300, 800))),
        "Tags__c": rng.sample(["vip", "beta", "emea", "apac", "amer", "reference", "at-risk", "expansion"],
                              rng.randint(0, 4)),
        "Custom_Settings__c": {"portal": {"theme": rng.choice(["dark", "light"]), "locale": rng.choice(["en_US", "fr_FR", "ja_JP"])},
                               "notifications": {"email": rng.random() < 0.7, "sms": rng.random() < 0.2},
                               "limits": {"seats": rng.randint(1, 5000), "storageGb": rng.randint(1, 2000)}},
        "Partner_Level__c": rng.choice([None, "Registered", "Silver", "Gold"]),
        "Segment__c": rng.choice(["Enterprise", "Mid-Market", "SMB"]),
        "Territory__c": rng.choice(["EMEA-North", "EMEA-South", "AMER-East", "AMER-West", "APAC"]),
        "Renewal_Owner__c": _sfid(rng, "005"),
        "Churn_Risk__c": rng.choice(["Low", "Medium", "High"]),
        "NPS__c": rng.randint(-100, 100),
        "Onboarding_Status__c": rng.choice(["Not Started", "In Progress", "Complete"]),
        "Integration_Key__c": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "Legacy_Id__c": "L-%08d" % rng.randint(0, 10 ** 8 - 1),
        "External_Ref__c": "ext-" + "".join(rng.choices(B62, k=12)),
        "Support_Email__c": "support@%s.example" % rng.choice(WORDS),
        "Billing_Contact__c": _sfid(rng, "003"),
        "Billing_Email__c": "billing@%s.example" % rng.choice(WORDS),
        "Invoice_Terms__c": rng.choice(["Net 15", "Net 30", "Net 60"]),
        "Payment_Method__c": rng.choice(["Card", "Wire", "ACH", "Invoice"]),
        "Tax_Id__c": "%02d-%07d" % (rng.randint(10, 99), rng.randint(0, 9999999)),
        "VAT_Number__c": None if rng.random() < 0.5 else "EU%09d" % rng.randint(0, 999999999),
        "Preferred_Language__c": rng.choice(["English", "Français", "Deutsch", "日本語"]),
        "Time_Zone__c": rng.choice(["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC"]),
        "Marketing_Opt_In__c": rng.random() < 0.5,
        "Last_Survey_Score__c": round(rng.uniform(0, 10), 1),
        "Data_Quality_Score__c": rng.randint(0, 100),
        "Account_Plan__c": _text(rng, 100, 700),
        "Competitors__c": ";".join(rng.sample(["Harkonnen", "Corrino", "Ix", "Tleilax", "Richese"], 2)),
        "Notes__c": _text(rng, 100, 800),
        "Hierarchy_Path__c": "/".join(_sfid(rng, "001") for _ in range(rng.randint(1, 3))),
        "Product_Interest__c": rng.sample(["Core", "Analytics", "Connect", "Vault", "Edge", "AI"], rng.randint(1, 3)),
        "Usage_Stats__c": {"activeUsers": rng.randint(0, 5000), "apiCalls30d": rng.randint(0, 10 ** 7),
                           "storageUsedGb": round(rng.uniform(0, 2000), 2), "lastLogin": created_s},
        "Feature_Flags__c": {f: rng.random() < 0.5 for f in ("sso", "scim", "audit", "sandbox", "betaUi")},
        "Social_Profiles__c": {"linkedin": "https://linkedin.example/%s" % sid,
                               "twitter": None if rng.random() < 0.5 else "@" + rng.choice(WORDS)},
        "Region__c": rng.choice(["North", "South", "East", "West"]),
        "Last_QBR__c": (created + dt.timedelta(days=rng.randint(0, 300))).date().isoformat(),
    }
    return sid, d


def update_account(rng, d, when):
    """Version 2: what a sync of a touched account brings."""
    s = _sfts(when)
    d["LastModifiedDate"] = s
    d["SystemModstamp"] = s
    d["LastModifiedById"] = _sfid(rng, "005")
    d["AnnualRevenue"] = round(d["AnnualRevenue"] * rng.uniform(0.9, 1.2), 2)
    d["NumberOfEmployees"] = max(1, d["NumberOfEmployees"] + rng.randint(-50, 200))
    d["Rating"] = rng.choice(["Hot", "Warm", "Cold"])
    d["Open_Cases__c"] = rng.randint(0, 80)
    d["Health_Score__c"] = rng.randint(0, 100)
    d["Has_Open_Opportunities__c"] = rng.random() < 0.5
    d["Last_Activity_At__c"] = s
    d["LastViewedDate"] = s
    d["Usage_Stats__c"] = dict(d["Usage_Stats__c"], activeUsers=rng.randint(0, 5000),
                               apiCalls30d=rng.randint(0, 10 ** 7), lastLogin=s)
    if rng.random() < 0.3:
        d["Description"] = _text(rng, 100, 1200)


def _normalized(name):
    return name.replace("_", "").lower()


def _check_fields(d):
    """120 fields, the mapped ones among them, and no two names equal once case and underscores
    are ignored (the extension's rule would then pick one of them)."""
    keys = list(d)
    assert len(keys) == 120, len(keys)
    assert len({_normalized(k) for k in keys}) == len(keys)
    names = {_normalized(k): k for k in keys}
    for col, field, _ in MAPPED:
        assert names.get(_normalized(col)) == field, (col, field)


def generate(n_records, seed=42):
    """N records in stream order: version 1 of every id (shuffled), then version 2 of every id."""
    rng = random.Random(seed)
    n_ids = (n_records + 1) // 2
    stream_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    syncs = [{"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "external_id": "org_%d" % rng.randint(1, 999),
              "metadata": {"instance": rng.choice(["na1", "eu3"])}} for _ in range(3)]
    dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    ids, sfids, datas, sync_of, created_of = [], [], [], [], []
    for i in range(n_ids):
        created = BASE_TIME - dt.timedelta(seconds=rng.randint(60, 86400 * 365 * 3))
        sfid, data = new_account(rng, created)
        if i == 0:
            _check_fields(data)
        ids.append(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        sfids.append(sfid)
        datas.append(data)
        sync_of.append(rng.choice(syncs))
        created_of.append(data["CreatedDate"])

    def record(i, idx, when):
        iso = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rec = {"id": ids[i], "upstream_id": sfids[i], "collection_id": COLLECTION, "provider": "salesforce",
               "stream_id": stream_id, "sync": sync_of[i], "deleted": False, "updated_idx": idx,
               "upstream_created_at": created_of[i], "upstream_updated_at": iso, "inserted_at": iso,
               "data": datas[i]}
        return Record(ids[i], idx, dump(rec).encode())

    def update(i, when):
        update_account(rng, datas[i], when)

    return two_versions(rng, n_ids, n_records, record, update, BASE_IDX, BASE_TIME)
