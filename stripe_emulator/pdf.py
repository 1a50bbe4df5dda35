"""A hand-written, minimal but valid PDF for ``invoice.invoice_pdf``.

No dependency: one page, Helvetica, text lines placed top-down, and a correct
xref table so viewers (and ``pdfinfo``) accept it.
"""

from __future__ import annotations


def _escape(text: str) -> str:
    """Latin-1 for Helvetica's WinAnsi encoding; the minus sign (U+2212), which it lacks, as a hyphen."""
    text = text.replace("\u2212", "-").encode("latin-1", "replace").decode("latin-1")
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def render_pdf(lines: list[tuple[int, str]]) -> bytes:
    """``lines`` are (font size, text) pairs, drawn from the top of an A4-ish page."""
    y = 790
    ops = ["BT"]
    for size, text in lines:
        if size == 0:  # spacer
            y -= 10
            continue
        y -= size + 6
        ops.append(f"/F1 {size} Tf 1 0 0 1 56 {y} Tm ({_escape(text)}) Tj")
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
