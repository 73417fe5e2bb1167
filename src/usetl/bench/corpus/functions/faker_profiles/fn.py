"""Test data as seeding and load-test handlers make it with Faker: seeded generators in
several locales (names, addresses, phone numbers, IBANs), providers found by importing the
package's many modules, unique values, and date and profile providers with a fixed
reference time."""

import datetime

from faker import Faker


def handler(event, context):
    Faker.seed(event["seed"])
    fake = Faker(event["locales"])
    out = {}
    for loc in event["locales"]:
        f = fake[loc]
        out[loc] = {"name": f.name(), "address": f.address().replace("\n", ", "),
                    "phone": f.phone_number(), "city": f.city(), "iban": f.iban(),
                    "company": f.company()}
    fake.seed_instance(event["seed"])
    en = fake[event["locales"][0]]
    emails = [en.unique.email() for _ in range(event["count"])]
    anchor = datetime.date(2024, 6, 1)
    dates = [str(en.date_between_dates(anchor - datetime.timedelta(days=365), anchor))
             for _ in range(3)]
    profile = en.simple_profile()
    profile["birthdate"] = str(profile["birthdate"])
    return {"locales": out, "emails": emails[:3], "unique": len(set(emails)) == len(emails),
            "dates": dates, "profile": profile, "uuid": en.uuid4(),
            "text": en.sentence(nb_words=8), "credit_card": en.credit_card_number()}
