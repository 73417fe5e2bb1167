"""Scraping-style parsing: BeautifulSoup over lxml and html.parser, lxml's XPath and
etree, of a generated page."""

from bs4 import BeautifulSoup
from lxml import etree, html


def page(n):
    rows = "".join(f"<tr class='{'odd' if i % 2 else 'even'}'><td>{i}</td><td><a href='/p/{i}'>"
                   f"item &amp; {i}</a></td></tr>" for i in range(n))
    return f"<html><head><title>Items</title></head><body><table id='t'>{rows}</table></body>"


def handler(event, context):
    text = page(event["rows"])
    soup = BeautifulSoup(text, "lxml")
    links = [a["href"] for a in soup.select("tr.odd a")]
    plain = BeautifulSoup(text, "html.parser")
    tree = html.fromstring(text)
    cells = tree.xpath("//tr[@class='even']/td[1]/text()")
    xml = etree.fromstring(b"<root><a x='1'>one</a><a x='2'>two</a></root>")
    return {"title": soup.title.string, "links": len(links), "first": links[:2],
            "same_rows": len(plain.find_all("tr")) == len(soup.find_all("tr")),
            "even_cells": len(cells), "text": soup.find("a").get_text(),
            "xml": [e.get("x") + e.text for e in xml.iter("a")]}
