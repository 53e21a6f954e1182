"""HTML for prompts and outputs. Every piece of prompt or model text is escaped here.

Pages show these through ``st.html``; markdown is never used for such text (``$`` pairs in
GSM8K would turn into LaTeX, and any tag would be live).
"""

from __future__ import annotations

import difflib
import re
from html import escape

STYLE = """<style>
.cl-text{white-space:pre-wrap;overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:0.9rem;
  line-height:1.5;border:1px solid #ddd;border-radius:6px;padding:0.6rem;max-height:28rem;overflow:auto}
.cl-drop{background:#ffd7d5;color:#8a1c14;text-decoration:line-through}
.cl-ins{background:#d3f5d9;color:#135c22}
.cl-del{background:#ffd7d5;color:#8a1c14;text-decoration:line-through}
.cl-unaligned{border-bottom:1px dotted #999}
.cl-restored{background:#d3f5d9;color:#135c22;font-weight:600}
.cl-new{background:#fff1c2;color:#6b4e00}
.cl-tok{border-left:1px solid #bbb;padding:0 1px}
.cl-mask{color:#aaa;background:#eee}
</style>"""


def md_escape(text: str) -> str:
    """Text that Streamlit's markdown (captions, headers) shows as typed: no LaTeX from $, no emphasis."""
    return re.sub(r"([\\`*_{}\[\]<>#|~$])", r"\\\1", str(text))


def text_html(text: str) -> str:
    return f'{STYLE}<div class="cl-text">{escape(text)}</div>'


def marked_prompt_html(original: str, words: list[dict]) -> str:
    """The original prompt with the compressor's dropped words struck through, from its own labels."""
    pieces, cursor = [], 0
    unaligned = []
    for word in words:
        start, end = word.get("start"), word.get("end")
        if start is None or end is None or start < cursor:
            if not word["kept"]:
                unaligned.append(word["text"])
            continue
        pieces.append(escape(original[cursor:start]))
        chunk = escape(original[start:end])
        pieces.append(chunk if word["kept"] else f'<span class="cl-drop" title="dropped">{chunk}</span>')
        cursor = end
    pieces.append(escape(original[cursor:]))
    note = ""
    if unaligned:
        note = ('<div class="cl-unaligned">Dropped words not found verbatim in the prompt: '
                + escape(" ".join(unaligned)) + "</div>")
    return f'{STYLE}<div class="cl-text">{"".join(pieces)}</div>{note}'


def reconstruction_html(pieces: list[tuple[str, str]]) -> str:
    """A reconstruction from ``core.pipeline.infill.marked``: restored words green, words new to the prompt amber."""
    titles = {"restored": "a dropped word, brought back", "new": "not in the original prompt"}
    html = "".join(f'<span class="cl-{mark}" title="{titles[mark]}">{escape(text)}</span>' if mark else escape(text)
                   for text, mark in pieces)
    return f'{STYLE}<div class="cl-text">{html}</div>'


def sequence_diff(a: list[str], b: list[str]) -> list[tuple[str, list[str]]]:
    """(op, items) runs turning ``a`` into ``b``: op is 'same', 'del' or 'ins'."""
    runs = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            runs.append(("same", a[i1:i2]))
            continue
        if i2 > i1:
            runs.append(("del", a[i1:i2]))
        if j2 > j1:
            runs.append(("ins", b[j1:j2]))
    return runs


def word_diff(a: str, b: str) -> list[tuple[str, str]]:
    """(op, text) pieces turning ``a`` into ``b`` word by word: op is 'same', 'del' or 'ins'."""
    return [(op, " ".join(words)) for op, words in sequence_diff(re.findall(r"\S+", a), re.findall(r"\S+", b))]


def diff_stats(pieces: list[tuple[str, str]]) -> dict[str, int]:
    counts = {"same": 0, "del": 0, "ins": 0}
    for op, text in pieces:
        counts[op] += len(text.split())
    return counts


def diff_html(a: str, b: str) -> str:
    spans = []
    for op, text in word_diff(a, b):
        if op == "same":
            spans.append(escape(text))
        else:
            title = "only in the output on the original prompt" if op == "del" else "only in the output on the compressed prompt"
            spans.append(f'<span class="cl-{op}" title="{title}">{escape(text)}</span>')
    return f'{STYLE}<div class="cl-text">{" ".join(spans)}</div>'


def canvas_html(trajectory: dict, at_step: int) -> str:
    """The answer canvas after step ``at_step``: committed tokens shaded by the probability the model gave
    them (darker: surer), tokens committed at this very step outlined, the rest still masks."""
    spans = []
    for piece, step, prob in zip(trajectory["piece"], trajectory["step"], trajectory["prob"]):
        if step == 0 or step > at_step:
            spans.append('<span class="cl-tok cl-mask" title="still masked">▢</span>')
            continue
        outline = "outline:2px solid #c0392b;" if step == at_step else ""
        spans.append(f'<span class="cl-tok" style="background:rgba(31,119,180,{0.1 + 0.6 * prob:.2f});{outline}" '
                     f'title="step {step}, probability {prob:.2f}">{escape(piece)}</span>')
    return f'{STYLE}<div class="cl-text">{"".join(spans)}</div>'


SPECIAL_PIECE = re.compile(r"^<\|[^|]*\|>$|^</?s>$")


def until_end(pieces: list[str]) -> list[str]:
    """Token pieces without the trailing end and padding tokens the canvas was filled up with."""
    end = len(pieces)
    while end and SPECIAL_PIECE.match(pieces[end - 1].strip()):
        end -= 1
    return pieces[:end]


def token_diff_html(a: list[str], b: list[str]) -> str:
    """Two outputs diffed by the model's own tokens, each token's boundary drawn."""
    css = {"same": "", "del": " cl-del", "ins": " cl-ins"}
    spans = [f'<span class="cl-tok{css[op]}">{escape(piece)}</span>'
             for op, pieces in sequence_diff(a, b) for piece in pieces]
    return f'{STYLE}<div class="cl-text">{"".join(spans)}</div>'


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading
    apostrophe, as OWASP advises against CSV injection; numbers and other values stay as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def csv_text(frame, index: bool = True) -> str:
    """A DataFrame as CSV with every text cell, index and header neutralised by ``csv_cell``."""
    safe = frame.map(csv_cell).rename(columns=csv_cell)
    if index:
        safe.index = safe.index.map(lambda v: tuple(csv_cell(x) for x in v) if isinstance(v, tuple) else csv_cell(v))
    return safe.to_csv(index=index)


def metrics_rows(view: dict) -> list[dict]:
    """Long-form rows (metric, comparison, value) of a run view, for tables and charts."""
    labels = {
        ("compressed", "original_output"): "compressed output vs original output",
        ("original", "gold"): "original output vs gold answer",
        ("compressed", "gold"): "compressed output vs gold answer",
        ("original", "reference_summary"): "original output vs reference summary",
        ("compressed", "reference_summary"): "compressed output vs reference summary",
    }
    from core.pipeline.metrics import METRIC_LABELS

    rows = []
    for condition, tables in view["metrics"].items():
        for reference, values in tables.items():
            for name, value in values.items():
                rows.append({"metric": METRIC_LABELS.get(name, name), "key": name,
                             "comparison": labels.get((condition, reference), f"{condition} vs {reference}"),
                             "value": value})
    order = list(METRIC_LABELS)
    rows.sort(key=lambda r: (r["comparison"], order.index(r["key"]) if r["key"] in order else len(order)))
    return rows
