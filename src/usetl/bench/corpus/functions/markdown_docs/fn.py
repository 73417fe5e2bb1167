"""Docs rendering in a function: Markdown with extensions (tables, fenced code, a table of
contents, attribute lists) rendered to HTML, then the HTML walked with BeautifulSoup's
html.parser for headings, links and table cells, as static-site build hooks do."""

import markdown
from bs4 import BeautifulSoup

DOC = """# Release notes {{: #top }}

[TOC]

## Changes in {version}

| Area | Change | Issue |
| --- | --- | --- |
{rows}

## Upgrading

```python
import usetl
print(usetl.__version__)
```

See [the guide](https://example.org/guide "Guide") and <https://example.org/faq>.

* item *one*
* item **two**
"""


def handler(event, context):
    rows = "\n".join(f"| area{i % 4} | change number {i} | #{100 + i} |"
                     for i in range(event["rows"]))
    text = DOC.format(version=event["version"], rows=rows)
    md = markdown.Markdown(extensions=["tables", "fenced_code", "toc", "attr_list"])
    html = md.convert(text)
    soup = BeautifulSoup(html, "html.parser")
    cells = [td.get_text() for td in soup.select("table tbody tr td:nth-of-type(3)")]
    return {"headings": [(h.name, h.get("id"), h.get_text()) for h in soup.find_all(
                ["h1", "h2"])],
            "links": [a["href"] for a in soup.find_all("a") if a["href"].startswith("http")],
            "issues": cells[:5], "rows": len(cells), "code": soup.find("code").get("class"),
            "toc": [t["name"] for t in md.toc_tokens[0]["children"]],
            "emphasis": [e.get_text() for e in soup.find_all(["em", "strong"])],
            "length": len(html)}
