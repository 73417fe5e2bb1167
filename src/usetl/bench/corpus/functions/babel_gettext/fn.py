"""Localised responses as i18n handlers produce them: message catalogs compiled at run time
with Babel (a .po parsed, a .mo written to /tmp), gettext's translation lookup with plural
forms and fallbacks, and Babel's CLDR data for numbers, currencies, dates and lists."""

import datetime
import gettext
import io
import os
import tempfile

from babel import Locale
from babel.dates import format_date, format_datetime, format_timedelta
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent

PO = {
    "de": '''
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\\n"

msgid "Order shipped"
msgstr "Bestellung versandt"

msgid "%(n)d item"
msgid_plural "%(n)d items"
msgstr[0] "%(n)d Artikel"
msgstr[1] "%(n)d Artikel"
''',
    "pl": '''
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\\n"
"Plural-Forms: nplurals=3; plural=(n==1 ? 0 : n%10>=2 && n%10<=4 && "
"(n%100<10 || n%100>=20) ? 1 : 2);\\n"

msgid "Order shipped"
msgstr "Zamówienie wysłane"

msgid "%(n)d item"
msgid_plural "%(n)d items"
msgstr[0] "%(n)d przedmiot"
msgstr[1] "%(n)d przedmioty"
msgstr[2] "%(n)d przedmiotów"
''',
}


def compile_catalogs(root):
    for lang, po in PO.items():
        catalog = read_po(io.StringIO(po), locale=lang)
        folder = os.path.join(root, lang, "LC_MESSAGES")
        os.makedirs(folder)
        with open(os.path.join(folder, "shop.mo"), "wb") as f:
            write_mo(f, catalog)


def messages(root, counts):
    out = {}
    for lang in ("de", "pl", "fr"):
        t = gettext.translation("shop", localedir=root, languages=[lang], fallback=True)
        out[lang] = [t.gettext("Order shipped")] + [
            t.ngettext("%(n)d item", "%(n)d items", n) % {"n": n} for n in counts]
    out["found"] = sorted(os.path.basename(os.path.dirname(os.path.dirname(p)))
                          for p in gettext.find("shop", root, languages=["pl", "de", "fr"],
                                                all=True))
    return out


def cldr(amount, when):
    out = {}
    for tag in ("en_US", "de_DE", "fr_FR", "ja_JP", "ar_EG", "hi_IN"):
        out[tag] = {
            "decimal": format_decimal(amount, locale=tag),
            "currency": format_currency(amount, "EUR", locale=tag),
            "percent": format_percent(0.256, locale=tag),
            "date": format_date(when.date(), format="full", locale=tag),
            "datetime": format_datetime(when, "medium", tzinfo=datetime.UTC,
                                        locale=tag),
            "list": format_list(["a", "b", "c"], locale=tag),
            "ago": format_timedelta(datetime.timedelta(hours=-3), add_direction=True,
                                    locale=tag),
            "name": Locale.parse(tag).display_name,
        }
    return out


def handler(event, context):
    with tempfile.TemporaryDirectory() as root:
        compile_catalogs(root)
        msgs = messages(root, event["counts"])
    when = datetime.datetime.fromisoformat(event["when"])
    return {"messages": msgs, "cldr": cldr(event["amount"], when)}
