"""Billing mails leave as HTML in one layout with the text as its alternative, through the real SMTP sink."""

import email

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
