"""XML in an integration function: a feed parsed with lxml (namespaces, XPath), validated
against an XML Schema, transformed with XSLT, and the same document turned into a dict and
back with xmltodict, as SOAP- and feed-facing handlers do."""

import xmltodict
from lxml import etree

NS = "urn:corpus:orders"
SCHEMA = f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="{NS}"
  xmlns="{NS}" elementFormDefault="qualified">
  <xs:element name="orders"><xs:complexType><xs:sequence>
    <xs:element name="order" maxOccurs="unbounded"><xs:complexType><xs:sequence>
      <xs:element name="line" maxOccurs="unbounded"><xs:complexType>
        <xs:attribute name="sku" type="xs:string" use="required"/>
        <xs:attribute name="qty" type="xs:positiveInteger" use="required"/>
      </xs:complexType></xs:element>
    </xs:sequence><xs:attribute name="id" type="xs:int" use="required"/></xs:complexType>
    </xs:element></xs:sequence></xs:complexType></xs:element></xs:schema>"""
XSLT = f"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
  xmlns:o="{NS}"><xsl:output method="xml" indent="no"/>
  <xsl:template match="/o:orders"><summary>
    <xsl:for-each select="o:order"><xsl:sort select="@id" data-type="number" order="descending"/>
      <order id="{{@id}}" units="{{sum(o:line/@qty)}}"/></xsl:for-each>
  </summary></xsl:template></xsl:stylesheet>"""


def feed(orders, bad=False):
    root = etree.Element(f"{{{NS}}}orders", nsmap={None: NS})
    for i in range(orders):
        order = etree.SubElement(root, f"{{{NS}}}order", id=str(i))
        for j in range(i % 3 + 1):
            etree.SubElement(order, f"{{{NS}}}line", sku=f"k{j}", qty=str(j + 1 if not bad else 0))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def handler(event, context):
    schema = etree.XMLSchema(etree.fromstring(SCHEMA.encode()))
    doc = etree.fromstring(feed(event["orders"]))
    bad = etree.fromstring(feed(2, bad=True))
    valid, invalid = schema.validate(doc), schema.validate(bad)
    errors = [e.message.split(":")[-1].strip() for e in schema.error_log][:1]
    ns = {"o": NS}
    qty = doc.xpath("sum(//o:line/@qty)", namespaces=ns)
    skus = sorted(set(doc.xpath("//o:line/@sku", namespaces=ns)))
    summary = etree.XSLT(etree.fromstring(XSLT.encode()))(doc)
    first = [dict(e.attrib) for e in summary.getroot()][:3]
    as_dict = xmltodict.parse(feed(3), process_namespaces=True, namespaces={NS: None})
    back = xmltodict.unparse({"orders": {"order": [{"@id": "9", "line": {"@sku": "z",
                                                                          "@qty": "2"}}]}})
    return {"valid": valid, "invalid": not invalid, "errors": errors, "qty": qty, "skus": skus,
            "summary": first, "dict": as_dict, "unparsed": back}
