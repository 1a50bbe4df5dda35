"""Billing mails leave as HTML in one layout with the text as its alternative, through the real SMTP sink."""

import email
from html.parser import HTMLParser

from app.services.mail import html_body
from tests.eventually import eventually


def test_billing_mails_have_an_html_part_in_the_layout_and_no_mid_sentence_breaks(billing, smtp_sink):
    billing.subscribe("starter", "monthly").close()  # a server closes the response: queued mail then leaves
    assert eventually(lambda: any("Welcome" in m["data"] for m in smtp_sink.messages))  # sent after the response
    [activated] = [m for m in smtp_sink.messages if "Welcome" in m["data"]]
    message = email.message_from_string(activated["data"])
    assert message.is_multipart()
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in message.walk()
        if not part.is_multipart()
    }
    text, html = parts["text/plain"].replace("\r\n", "\n"), parts["text/html"]
    assert "Smart Strategies <span" in html and "<h1" in html
    assert 'href="http' in html and "/billing" in html
    for paragraph in text.strip().split("\n\n"):
        assert "\n" not in paragraph.strip() or paragraph.strip().startswith("—"), paragraph


class Anchors(HTMLParser):
    """The <a> elements of an HTML document: (href, style, text)."""

    def __init__(self):
        super().__init__()
        self.found: list[list[str]] = []
        self._open = False

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            values = dict(attrs)
            self.found.append([values.get("href") or "", values.get("style") or "", ""])
            self._open = True

    def handle_endtag(self, tag):
        if tag == "a":
            self._open = False

    def handle_data(self, data):
        if self._open:
            self.found[-1][2] += data


def test_the_html_part_links_the_text_part_s_address_and_escapes_the_rest(app):
    """Every mail's HTML part showed `<a style="color:#4f46e5;" href=…>` as words (Jinja's `replace` on urlize's
    markup escaped what it inserted): the link must be an element, its text the address, the rest escaped."""
    link = "https://app.example.com/verify-email/" + "x" * 120
    with app.test_request_context("/"):
        html = html_body("Confirm your email", f"Hello <b>Ada</b> & co,\n\nConfirm it here: {link}\n\n— The team")
    anchors = Anchors()
    anchors.feed(html)
    assert [(href, text) for href, _, text in anchors.found] == [(link, link)]
    assert "color:#4f46e5" in anchors.found[0][1] and "break-all" in anchors.found[0][1]  # no wider than a phone
    assert "&lt;a" not in html and "Hello &lt;b&gt;Ada&lt;/b&gt; &amp; co," in html
