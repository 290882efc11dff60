"""Reads a kdengine report page the way a browser's parser would and says
what test_report checks: every tag closed in order, nothing fetched or run
(no script, no src/href, no url()), and each curve's polyline.

usage: check_page.py PAGE.html
Prints "error WHAT" per problem, then "curve SERIES RUN POINTS INSIDE STROKE
SECTION" per polyline (INSIDE: 1 when every point lies in its chart's plot
area; SECTION: the <h2> above it),
then "text" lines with the text of headings, tables, legends and the
jobs (newlines as spaces). Exit 0 when it parsed.
"""
import sys
from html.parser import HTMLParser

TEXT_TAGS = ("td", "text", "li", "h2", "h3", "pre")
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr"}
# the plot rectangle of cli/report_svg.c: x 72..540, y 34..254
PLOT = (72.0, 540.0, 34.0, 254.0)


class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.curves, self.texts = [], [], [], []
        self.section = ""

    def handle_starttag(self, tag, attrs):
        self.check(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.check(tag, attrs)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            open_tag = self.stack[-1] if self.stack else "nothing"
            self.errors.append("</%s> closes <%s>" % (tag, open_tag))
            return
        self.stack.pop()

    def handle_data(self, data):
        if data.strip() and self.stack and self.stack[-1] in TEXT_TAGS:
            self.texts.append(data.strip())
        if self.stack and self.stack[-1] == "h2":
            self.section = data.strip()

    def check(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.errors.append("a <script> element")
        for name in ("src", "href"):
            if name in a:
                self.errors.append("<%s %s=%r> fetches" % (tag, name, a[name]))
        if "url(" in (a.get("style") or ""):
            self.errors.append("<%s> style fetches a url()" % tag)
        if tag == "polyline":
            points = [tuple(map(float, p.split(","))) for p in a.get("points", "").split()]
            inside = all(PLOT[0] - 0.01 <= x <= PLOT[1] + 0.01 and
                         PLOT[2] - 0.01 <= y <= PLOT[3] + 0.01 for x, y in points)
            self.curves.append((a.get("data-series"), a.get("data-run"), len(points), int(inside),
                                a.get("stroke"), self.section))


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    page = Page()
    page.feed(text)
    page.close()
    if "url(" in text:
        page.errors.append("url() in the page")
    if page.stack:
        page.errors.append("unclosed: " + " ".join(page.stack))
    for e in page.errors:
        print("error", e)
    for c in page.curves:
        print("curve %s %s %d %d %s %s" % c)
    for t in page.texts:
        print("text", t.replace("\n", " "))


main()
