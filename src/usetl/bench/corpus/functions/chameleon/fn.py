"""FunctionBench chameleon: a big HTML table rendered by a Chameleon page template."""

import hashlib

from chameleon import PageTemplate

BIGTABLE_ZPT = """\
<table xmlns="http://www.w3.org/1999/xhtml"
xmlns:tal="http://xml.zope.org/namespaces/tal">
<tr tal:repeat="row python: options['table']">
<td tal:repeat="c python: row.values()">
<span tal:define="d python: c + 1"
tal:attributes="class python: 'column-' + str(d)"
tal:content="python: d" />
</td>
</tr>
</table>"""


def handler(event, context):
    rows, cols = event["num_of_rows"], event["num_of_cols"]
    tmpl = PageTemplate(BIGTABLE_ZPT)
    data = {}
    for i in range(cols):
        data[str(i)] = i
    table = [data for _ in range(rows)]
    options = {"table": table}
    html = tmpl.render(options=options)
    return {"bytes": len(html), "sha256": hashlib.sha256(html.encode()).hexdigest()}
